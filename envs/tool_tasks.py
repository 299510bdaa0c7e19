"""Tasks for tool-calling environments: procedural math that rewards running code.

`tool_math_tasks` makes problems a model gets wrong in its head but right with a few
lines of Python or a calculator: exact products of large numbers, modular powers, sums of
primes, Fibonacci numbers, divisor counts, totients, gcd/lcm of large numbers, digit sums
of large powers, power sums, inclusion-exclusion counts, the n-th prime, Collatz lengths.
Each answer is an exact integer computed here with an efficient method (closed forms, one
shared sieve, trial division by primes), so generating a task takes well under a
millisecond and a task set needs no file.

A task depends only on (seed, index): its random stream is seeded with the string
`tool_math/{seed}/{index}` (random.Random hashes strings with SHA-512, never with Python's
salted `hash()`), and kinds take turns in a seeded order, so every kind appears in any
`len(TOOL_MATH_KINDS)` consecutive indices.

`resolve_tool_tasks` reads the task specs of tool environments: `tool_math[?size=&seed=]`,
`retrieval_qa` (the bundled retrieval set), and every spec `resolve_tasks` reads.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Callable
from functools import cache
from itertools import accumulate
from urllib.parse import parse_qsl

from envs.tasks import GeneratedTasks, Task, TaskSource, bundled_tasks, resolve_tasks

_SIEVE_LIMIT = 40_000  # covers the sums of primes (N <= 20000), the 2000th prime and sqrt(10**9)
BOXED = "Give the final answer as \\boxed{answer}."


@cache
def _primes() -> tuple[int, ...]:
    """All primes below `_SIEVE_LIMIT` (sieve of Eratosthenes, built once)."""
    flags = bytearray([1]) * _SIEVE_LIMIT
    flags[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(_SIEVE_LIMIT - 1) + 1):
        if flags[p]:
            flags[p * p :: p] = bytes(len(range(p * p, _SIEVE_LIMIT, p)))
    return tuple(i for i, is_prime in enumerate(flags) if is_prime)


@cache
def _prime_prefix_sums() -> tuple[int, ...]:
    """`sums[i]` = sum of the first i primes."""
    return (0, *accumulate(_primes()))


def _factorize(n: int) -> dict[int, int]:
    """Prime factorization of 1 <= n < _SIEVE_LIMIT**2 by trial division by primes."""
    factors: dict[int, int] = {}
    for p in _primes():
        if p * p > n:
            break
        while n % p == 0:
            factors[p] = factors.get(p, 0) + 1
            n //= p
    if n > 1:
        factors[n] = factors.get(n, 0) + 1
    return factors


def _composite_number(rng: random.Random) -> int:
    """A number up to 10**9: half plain random, half built from small primes (many divisors)."""
    if rng.random() < 0.5:
        return rng.randint(100_000, 100_000_000)
    n = 1
    while n < 100_000:
        p = rng.choice((2, 2, 2, 3, 3, 5, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47))
        if n * p > 1_000_000_000:
            break
        n *= p
    return n * rng.choice((1, 1, 1, 53, 97, 101, 997))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _product(rng: random.Random) -> tuple[str, int]:
    a = rng.randint(10_000, 999_999)
    b = rng.randint(10_000, 999_999)
    return f"What is {a} × {b}?", a * b


def _modpow(rng: random.Random) -> tuple[str, int]:
    a, b, m = rng.randint(2, 999), rng.randint(1_000, 1_000_000), rng.randint(1_000, 99_999)
    question = f"What is the remainder when {a}^{b} (that is, {a} to the power {b}) is divided by {m}?"
    return question, pow(a, b, m)


def _prime_sum(rng: random.Random) -> tuple[str, int]:
    n = rng.randint(1_000, 20_000)
    below = bisect_left(_primes(), n)  # how many primes are below n
    return f"What is the sum of all prime numbers less than {n}?", _prime_prefix_sums()[below]


def _fibonacci(rng: random.Random) -> tuple[str, int]:
    n = rng.randint(30, 90)
    a, b = 0, 1  # F(0), F(1)
    for _ in range(n):
        a, b = b, a + b
    question = (
        "The Fibonacci numbers are defined by F(1) = 1, F(2) = 1 and F(k) = F(k-1) + F(k-2) for k > 2. "
        f"What is F({n})?"
    )
    return question, a


def _divisor_count(rng: random.Random) -> tuple[str, int]:
    n = _composite_number(rng)
    return (
        f"How many positive divisors does {n} have (counting 1 and {n} itself)?",
        math.prod(e + 1 for e in _factorize(n).values()),
    )


def _totient(rng: random.Random) -> tuple[str, int]:
    n = _composite_number(rng)
    phi = n
    for p in _factorize(n):
        phi = phi // p * (p - 1)
    return f"How many integers k with 1 ≤ k ≤ {n} satisfy gcd(k, {n}) = 1? (This is Euler's φ({n}).)", phi


def _gcd(rng: random.Random) -> tuple[str, int]:
    g = rng.randint(100, 99_999)
    a, b = g * rng.randint(10_000, 9_999_999), g * rng.randint(10_000, 9_999_999)
    return f"What is the greatest common divisor of {a} and {b}?", math.gcd(a, b)


def _lcm(rng: random.Random) -> tuple[str, int]:
    g = rng.randint(10, 9_999)
    a, b = g * rng.randint(1_000, 999_999), g * rng.randint(1_000, 999_999)
    return f"What is the least common multiple of {a} and {b}?", math.lcm(a, b)


def _digit_sum_power(rng: random.Random) -> tuple[str, int]:
    base, k = rng.randint(2, 9), rng.randint(100, 1_000)
    return (
        f"What is the sum of the decimal digits of {base}^{k} ({base} to the power {k})?",
        sum(map(int, str(base**k))),
    )


def _power_sum(rng: random.Random) -> tuple[str, int]:
    n, power = rng.randint(100, 100_000), rng.choice((2, 3))
    words = {2: "squares", 3: "cubes"}[power]
    question = (
        f"What is 1^{power} + 2^{power} + 3^{power} + ... + {n}^{power} (the sum of the {words} of 1 to {n})?"
    )
    if power == 2:
        return question, n * (n + 1) * (2 * n + 1) // 6
    return question, (n * (n + 1) // 2) ** 2


def _divisible_count(rng: random.Random) -> tuple[str, int]:
    n = rng.randint(10_000, 10_000_000)
    a, b = rng.sample(range(2, 61), 2)
    question = f"How many integers from 1 to {n} (inclusive) are divisible by {a} or by {b} (or both)?"
    return question, n // a + n // b - n // math.lcm(a, b)


def _nth_prime(rng: random.Random) -> tuple[str, int]:
    n = rng.randint(100, 2_000)
    return f"What is the {_ordinal(n)} prime number? (The 1st prime is 2, the 2nd is 3.)", _primes()[n - 1]


def _collatz_steps(rng: random.Random) -> tuple[str, int]:
    start = rng.randint(1_000, 1_000_000)
    n, steps = start, 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    question = (
        f"Start with {start}. Repeatedly replace the number x by x/2 if x is even and by 3x + 1 if x is odd. "
        "How many replacements does it take to reach 1?"
    )
    return question, steps


TOOL_MATH_KINDS: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    "product": _product,
    "modpow": _modpow,
    "prime_sum": _prime_sum,
    "fibonacci": _fibonacci,
    "divisor_count": _divisor_count,
    "totient": _totient,
    "gcd": _gcd,
    "lcm": _lcm,
    "digit_sum_power": _digit_sum_power,
    "power_sum": _power_sum,
    "divisible_count": _divisible_count,
    "nth_prime": _nth_prime,
    "collatz_steps": _collatz_steps,
}


class ToolMathTasks(GeneratedTasks):
    """`tool_math_tasks`' source: names a task without building it (splits over ids stay cheap)."""

    def __init__(self, size: int, seed: int) -> None:
        self.seed = seed
        kinds = list(TOOL_MATH_KINDS)
        random.Random(f"tool_math/{seed}/kinds").shuffle(kinds)
        self.kind_order = tuple(kinds)
        super().__init__(self._make, size, name=f"tool_math/{seed}")

    def task_id(self, index: int) -> str:
        return f"tool_math/{self.seed}/{index}"

    def _make(self, index: int) -> Task:
        task_id = self.task_id(index)
        kind = self.kind_order[index % len(self.kind_order)]
        question, answer = TOOL_MATH_KINDS[kind](random.Random(task_id))
        return Task(
            id=task_id,
            prompt=f"{question} {BOXED}",
            answer=str(answer),
            info={"kind": kind, "source": "tool_math"},
        )


def tool_math_tasks(size: int = 1000, seed: int = 0) -> GeneratedTasks:
    """`size` integer-answer problems where running Python beats mental arithmetic."""
    return ToolMathTasks(size, seed)


_TOOL_MATH_KEYS = ("size", "seed")


def resolve_tool_tasks(spec: str | TaskSource) -> TaskSource:
    """A task source for a tool environment from its spec.

    `tool_math` or `tool_math?size=500&seed=1` (procedural math, see `tool_math_tasks`);
    `retrieval_qa` (the bundled retrieval set); anything else goes to `resolve_tasks`
    (`bundled:NAME`, `jsonl:PATH`, `*.jsonl`, `hf:PATH`, `reasoning_gym:NAME?...`). A
    TaskSource passes through.
    """
    if isinstance(spec, TaskSource):
        return spec
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"tasks must be a TaskSource or a spec string, got {spec!r}")
    name, has_query, query = spec.partition("?")
    if name == "tool_math":
        pairs = parse_qsl(query, keep_blank_values=True)
        unknown = sorted({key for key, _ in pairs} - set(_TOOL_MATH_KEYS))
        if unknown:
            known = ", ".join(_TOOL_MATH_KEYS)
            raise ValueError(f"unknown option(s) {', '.join(unknown)} in {spec!r}; tool_math takes {known}")
        options: dict[str, int] = {}
        for key, value in pairs:
            if key in options:
                raise ValueError(f"option {key} given twice in {spec!r}")
            try:
                options[key] = int(value)
            except ValueError:
                raise ValueError(f"option {key} in {spec!r} must be an integer, got {value!r}") from None
        return tool_math_tasks(**options)
    if name == "retrieval_qa":
        if has_query:
            raise ValueError(f"retrieval_qa takes no options, got {spec!r}")
        return bundled_tasks("retrieval_qa")
    return resolve_tasks(spec)

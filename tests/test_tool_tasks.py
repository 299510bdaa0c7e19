"""Procedural tool-math tasks (checked against independent computations) and tool task specs."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sympy

from envs.tasks import GeneratedTasks, Task, TaskFileError, TaskList, TaskSource
from envs.tool_tasks import TOOL_MATH_KINDS, resolve_tool_tasks, tool_math_tasks

RETRIEVAL_QA = Path(__file__).resolve().parent.parent / "envs" / "data" / "retrieval_qa.jsonl"


def numbers(prompt: str) -> list[int]:
    """The integers in a prompt, in order (the closing \\boxed{answer} instruction has none)."""
    return [int(n) for n in re.findall(r"\d+", prompt)]


# Independent answers, each computed from the numbers the prompt states, by a different
# route than the generator: naive loops, numpy, or sympy.


def _modpow(prompt: str) -> int:
    stated = numbers(prompt)  # a, b, then a and b again in words, then m
    a, b, m = stated[0], stated[1], stated[-1]
    result, base = 1, a % m
    for bit in bin(b)[2:]:  # left-to-right binary exponentiation
        result = result * result % m
        if bit == "1":
            result = result * base % m
    return result


def _fibonacci(prompt: str) -> int:
    return int(sympy.fibonacci(numbers(prompt)[-1]))


def _divisor_count(prompt: str) -> int:
    n = numbers(prompt)[0]
    return sum(2 - (d * d == n) for d in range(1, math.isqrt(n) + 1) if n % d == 0)


def _totient(prompt: str) -> int:
    return int(sympy.totient(numbers(prompt)[-1]))


def _euclid(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _power_sum(prompt: str) -> int:
    power, n = numbers(prompt)[1], numbers(prompt)[-1]
    return sum(k**power for k in range(1, n + 1))


def _divisible_count(prompt: str) -> int:
    n, a, b = numbers(prompt)[1:4]
    values = np.arange(1, n + 1, dtype=np.int32)
    return int(np.count_nonzero((values % a == 0) | (values % b == 0)))


def _collatz(prompt: str) -> int:
    sequence = [numbers(prompt)[0]]
    while sequence[-1] != 1:
        x = sequence[-1]
        sequence.append(3 * x + 1 if x % 2 else x // 2)
    return len(sequence) - 1


INDEPENDENT: dict[str, Callable[[str], int]] = {
    "product": lambda p: math.prod(numbers(p)),
    "modpow": _modpow,
    "prime_sum": lambda p: int(sum(sympy.primerange(2, numbers(p)[0]))),
    "fibonacci": _fibonacci,
    "divisor_count": _divisor_count,
    "totient": _totient,
    "gcd": lambda p: _euclid(*numbers(p)),
    "lcm": lambda p: math.prod(numbers(p)) // _euclid(*numbers(p)),
    "digit_sum_power": lambda p: sum(int(d) for d in str(sympy.Integer(numbers(p)[0]) ** numbers(p)[1])),
    "power_sum": _power_sum,
    "divisible_count": _divisible_count,
    "nth_prime": lambda p: int(sympy.prime(numbers(p)[0])),
    "collatz_steps": _collatz,
}


def test_at_least_eight_kinds_each_with_an_independent_check() -> None:
    assert len(TOOL_MATH_KINDS) >= 8
    assert set(INDEPENDENT) == set(TOOL_MATH_KINDS)


def test_deterministic_ids_size_and_shape() -> None:
    tasks = tool_math_tasks(size=300, seed=7)
    again = tool_math_tasks(size=300, seed=7)
    assert isinstance(tasks, GeneratedTasks) and len(tasks) == 300
    assert [tasks[i] for i in range(300)] == [again[i] for i in range(300)]
    assert [t.id for t in tasks] == [f"tool_math/7/{i}" for i in range(300)]
    assert [tasks.task_id(i) for i in range(300)] == [t.id for t in tasks]
    assert tasks.find("tool_math/7/123") == tasks[123]
    other = tool_math_tasks(size=300, seed=8)
    assert sum(a.prompt == b.prompt for a, b in zip(tasks, other, strict=True)) < 10
    for task in tasks:
        assert isinstance(task.prompt, str)
        assert task.prompt.endswith("Give the final answer as \\boxed{answer}.")
        assert isinstance(task.answer, str) and re.fullmatch(r"\d+", task.answer)
        assert dict(task.info) == {"kind": task.info["kind"], "source": "tool_math"}
        assert task.info["kind"] in TOOL_MATH_KINDS
    with pytest.raises(IndexError):
        tasks[300]
    with pytest.raises(ValueError, match="size must be positive"):
        tool_math_tasks(size=0)


def test_a_task_depends_only_on_seed_and_index() -> None:
    small, large = tool_math_tasks(size=20, seed=3), tool_math_tasks(size=5000, seed=3)
    assert [small[i] for i in range(20)] == [large[i] for i in range(20)]
    assert large[4999] == tool_math_tasks(size=5000, seed=3)[4999]  # fresh source, same task


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_kind_appears_in_the_first_200(seed: int) -> None:
    tasks = tool_math_tasks(size=1000, seed=seed)
    assert {tasks[i].info["kind"] for i in range(200)} == set(TOOL_MATH_KINDS)


def test_answers_match_independent_computations() -> None:
    checked: dict[str, int] = dict.fromkeys(TOOL_MATH_KINDS, 0)
    for seed in (0, 1):
        tasks = tool_math_tasks(size=400, seed=seed)
        for task in tasks:
            kind = task.info["kind"]
            if checked[kind] >= 6:
                continue
            assert task.answer == str(INDEPENDENT[kind](task.prompt)), (task.id, task.prompt)
            checked[kind] += 1
    assert all(count == 6 for count in checked.values()), checked


def test_problems_are_in_their_stated_ranges() -> None:
    for task in tool_math_tasks(size=1300, seed=5):
        kind, stated = task.info["kind"], numbers(task.prompt)
        if kind == "prime_sum":
            assert 1000 <= stated[0] <= 20000
        elif kind == "fibonacci":
            assert 30 <= stated[-1] <= 90
        elif kind == "nth_prime":
            assert 100 <= stated[0] <= 2000
        elif kind == "product":
            assert all(len(str(n)) >= 5 for n in stated)


def test_generation_is_fast() -> None:
    tool_math_tasks(size=1, seed=0)[0]  # builds the shared sieve once
    tasks = tool_math_tasks(size=2000, seed=11)
    started = time.perf_counter()
    for i in range(2000):
        tasks[i]
    assert (time.perf_counter() - started) / 2000 < 0.005


def test_split_and_shuffle_work_on_generated_ids() -> None:
    tasks = tool_math_tasks(size=500, seed=2)
    train, evaluation = tasks.split("train"), tasks.split("eval")
    assert len(train) + len(evaluation) == 500
    assert not {t.id for t in train} & {t.id for t in evaluation}
    assert sorted(t.id for t in tasks.shuffled(1)) == sorted(t.id for t in tasks)


def test_resolve_tool_math_specs() -> None:
    default = resolve_tool_tasks("tool_math")
    assert len(default) == 1000 and default[0].id == "tool_math/0/0"
    custom = resolve_tool_tasks("tool_math?size=500&seed=1")
    assert len(custom) == 500 and custom[3] == tool_math_tasks(size=500, seed=1)[3]
    assert custom[3].id == "tool_math/1/3"
    assert len(resolve_tool_tasks("tool_math?size=7")) == 7


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("tool_math?sise=5&colour=red", ValueError, "unknown option.*colour, sise"),
        ("tool_math?size=lots", ValueError, "size .* must be an integer"),
        ("tool_math?seed=1&seed=2", ValueError, "seed given twice"),
        ("tool_math?size=0", ValueError, "size must be positive"),
        ("retrieval_qa?size=3", ValueError, "retrieval_qa takes no options"),
        ("no_such_thing", ValueError, "cannot tell where to load tasks"),
        ("bundled:no_such_set", TaskFileError, "no bundled task set"),
        ("", TypeError, "spec string"),
    ],
)
def test_resolve_errors(spec: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_tool_tasks(spec)


def test_other_specs_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "q1", "prompt": "2+2?", "answer": "4"}) + "\n")
    for spec in (str(path), f"jsonl:{path}"):
        tasks = resolve_tool_tasks(spec)
        assert isinstance(tasks, TaskList) and tasks[0] == Task(id="q1", prompt="2+2?", answer="4")
    assert len(resolve_tool_tasks("bundled:math_basic")) > 0
    source: TaskSource = tool_math_tasks(size=3)
    assert resolve_tool_tasks(source) is source


@pytest.mark.skipif(not RETRIEVAL_QA.exists(), reason="envs/data/retrieval_qa.jsonl is not written yet")
def test_retrieval_qa_is_the_bundled_set() -> None:
    tasks = resolve_tool_tasks("retrieval_qa")
    assert len(tasks) > 0 and tasks is resolve_tool_tasks("bundled:retrieval_qa")

"""Reward server throughput and latency: `rewardgym serve` over HTTP vs the same reward in-process.

Baseline: the reward object in this process, `await reward.score_batch(batch)` in a loop.
Ours: the real server (`python -m rewardgym serve --reward exact_match --reward math` as a
subprocess on a loopback port) called with `RewardClient.score`, the same batches, the same
loop. On both sides `--in-flight` batches are outstanding at once (default 2, as a trainer
overlaps scoring with its next step), so the server's JSON work can overlap the scoring.
The in-process phase runs first and closes its math-verify pool before the server starts,
so neither side competes for the cores during the other's measurement. The benchmark
client shares the machine with the server: HTTP numbers include the client's own JSON
and httpx work, which the in-process side never pays.

Measured: rewards/s at batch sizes 1, 16 and 256 for `math` (math-verify in worker
processes) and `exact_match` (a microsecond rule); then p50/p99 request latency and
rewards/s with 32 concurrent clients (32 tasks, each sending one request and awaiting it)
at batch 1 and 16. Targets: at batch 256 the server delivers >= 0.9x in-process
throughput; >= 2,000 rule rewards/s over HTTP on 2 cores.

Expect the rule's ratio to be far below 0.9x: a rule costs microseconds, so HTTP, JSON
encoding and validation cost many times the reward itself and the ratio measures only
that overhead. The 0.9x target means something for rewards that do real work (math-verify).
With `--workers` > 1, uvicorn's pre-bound socket leaves TCP_NODELAY off (Kludex/uvicorn#3149);
`rewardgym serve` turns it back on per connection (without that, every keep-alive request
waited ~40 ms for a delayed ACK).

    python bench/bench_reward_server.py [--seconds 3] [--in-flight 2] [--workers 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from rewards import Reward, RewardClient, Sample, Score, make_reward
from rewards.math_equivalence import MathEquivalence
from trainer.local_server import rewardgym_server

REWARDS = ("exact_match", "math")
BATCH_SIZES = (1, 16, 256)
LATENCY_BATCHES = (1, 16)
CLIENTS = 32
POOL_SIZE = 256  # distinct samples per reward; smaller batches cycle through them

ScoreFn = Callable[[Sequence[Sample]], Awaitable[list[Score]]]

# (gold, shown answer): a mix of right answers, equivalent forms and wrong answers.
MATH_ANSWERS = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("\\frac{3}{4}", "\\frac{6}{8}"),
    ("8", "2^3"),
    ("2", "\\sqrt{4}"),
    ("x^2 + 5x + 6", "(x+2)(x+3)"),
    ("42", "42"),
    ("\\frac{2}{3}", "0.67"),  # wrong: a rounded decimal is not 2/3
    ("17", "18"),  # wrong
    ("3\\sqrt{2}", "\\sqrt{18}"),
    ("\\pi", "3.14"),  # wrong
    ("-7", "-7"),
    ("1000", "10^3"),
    ("\\frac{5}{2}", "2.5"),
    ("x + 1", "1 + x"),
    ("12", "13"),  # wrong
]
REASONING = (
    "Let me work through this carefully. First I restate what is asked and write down "
    "the quantities given in the problem. Then I simplify step by step, checking each "
    "line against the previous one so no sign or factor is lost. Combining the terms "
    "and reducing the result to its simplest form gives the final answer."
)
CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Egypt", "Cairo"),
    ("Chile", "Santiago"),
]


def math_samples(n: int) -> list[Sample]:
    """A short math prompt and a reasoning completion ending in `\\boxed{...}`."""
    samples = []
    for i in range(n):
        gold, shown = MATH_ANSWERS[i % len(MATH_ANSWERS)]
        prompt = f"Problem {i}: simplify the expression and put the final answer in \\boxed{{}}."
        completion = f"{REASONING} So the answer is \\boxed{{{shown}}}."
        samples.append(Sample.from_completion(completion, gold, prompt=prompt))
    return samples


def rule_samples(n: int) -> list[Sample]:
    """A question with a one-word answer; every fourth answer is wrong."""
    samples = []
    for i in range(n):
        country, capital = CAPITALS[i % len(CAPITALS)]
        answer = CAPITALS[(i + 1) % len(CAPITALS)][1] if i % 4 == 3 else capital
        prompt = f"What is the capital of {country}? Answer with the city name only."
        references = [capital, f"{capital}, {country}"]
        samples.append(Sample.from_completion(f"{answer}.", references, prompt=prompt))
    return samples


def batches_of(pool: Sequence[Sample], size: int) -> list[list[Sample]]:
    return [list(pool[i : i + size]) for i in range(0, len(pool), size)]


async def throughput(score: ScoreFn, batches: list[list[Sample]], seconds: float, in_flight: int) -> float:
    """Rewards/s with `in_flight` loops each scoring one batch after another (cycling)."""

    async def loop(offset: int, deadline: float) -> int:
        done = 0
        i = offset
        while time.perf_counter() < deadline:
            batch = batches[i % len(batches)]
            scores = await score(batch)
            if len(scores) != len(batch) or any(s.error for s in scores):
                raise RuntimeError(f"scoring failed: {next((s.error for s in scores if s.error), 'count')}")
            done += len(batch)
            i += in_flight
        return done

    async def run(duration: float) -> float:
        start = time.perf_counter()
        counts = await asyncio.gather(*(loop(k, start + duration) for k in range(in_flight)))
        return sum(counts) / (time.perf_counter() - start)

    await run(min(1.0, seconds / 3))  # warm-up: pools, connections, caches
    return await run(seconds)


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    rate: float


async def latency(score: ScoreFn, batches: list[list[Sample]], seconds: float, clients: int) -> Latency:
    """`clients` tasks, each sending one request and awaiting it, for `seconds`."""
    times: list[float] = []

    async def client(offset: int, deadline: float, record: bool) -> int:
        done = 0
        i = offset
        while time.perf_counter() < deadline:
            batch = batches[i % len(batches)]
            start = time.perf_counter()
            await score(batch)
            if record:
                times.append(time.perf_counter() - start)
            done += len(batch)
            i += clients
        return done

    warm = time.perf_counter() + min(1.0, seconds / 3)
    await asyncio.gather(*(client(k, warm, False) for k in range(clients)))
    start = time.perf_counter()
    counts = await asyncio.gather(*(client(k, start + seconds, True) for k in range(clients)))
    rate = sum(counts) / (time.perf_counter() - start)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return Latency(statistics.median(times) * 1000, p99 * 1000, rate)


# -- the server ----------------------------------------------------------------------------------


@contextlib.contextmanager
def reward_server(workers: int, timeout_s: float = 180.0) -> Iterator[str]:
    """`rewardgym serve` as a subprocess (its own process group); stopped however we leave."""
    argv = ["serve", "--workers", str(workers)]
    for name in REWARDS:
        argv += ["--reward", name]
    with rewardgym_server(argv, timeout_s=timeout_s) as url:
        yield url


async def warm_server(client: RewardClient, pools: dict[str, list[Sample]], rounds: int = 3) -> None:
    """Concurrent requests on fresh connections, so every uvicorn worker starts its math pool."""
    for _ in range(rounds):
        await asyncio.gather(
            *(client.score(name, pool[:16]) for name, pool in pools.items() for _ in range(CLIENTS // 2))
        )


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    inproc: dict[tuple[str, int], float]
    http: dict[tuple[str, int], float]
    latency: dict[tuple[str, int], Latency]


async def measure_in_process(
    pools: dict[str, list[Sample]], seconds: float, in_flight: int
) -> tuple[dict[tuple[str, int], float], dict[str, list[float]]]:
    rates: dict[tuple[str, int], float] = {}
    values: dict[str, list[float]] = {}
    for name, pool in pools.items():
        reward = make_reward(name)
        assert isinstance(reward, Reward)
        try:
            values[name] = [s.value for s in await reward.score_batch(pool)]
            for size in BATCH_SIZES:
                rates[name, size] = await throughput(
                    reward.score_batch, batches_of(pool, size), seconds, in_flight
                )
                print(f"  in-process {name:12s} batch {size:4d}: {rates[name, size]:9.0f} rewards/s")
        finally:
            if isinstance(reward, MathEquivalence):
                reward.verifier.close()  # free the cores before the server starts its own pool
    return rates, values


async def measure_http(
    url: str, pools: dict[str, list[Sample]], seconds: float, in_flight: int
) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], Latency], dict[str, list[float]]]:
    rates: dict[tuple[str, int], float] = {}
    lat: dict[tuple[str, int], Latency] = {}
    values: dict[str, list[float]] = {}
    async with RewardClient(url, max_batch_size=max(BATCH_SIZES), max_concurrency=CLIENTS) as client:
        await warm_server(client, pools)
        for name, pool in pools.items():
            values[name] = [s.value for s in await client.score(name, pool)]

            def score(batch: Sequence[Sample], name: str = name) -> Awaitable[list[Score]]:
                return client.score(name, batch)

            for size in BATCH_SIZES:
                rates[name, size] = await throughput(score, batches_of(pool, size), seconds, in_flight)
                print(f"  HTTP       {name:12s} batch {size:4d}: {rates[name, size]:9.0f} rewards/s")
            for size in LATENCY_BATCHES:
                lat[name, size] = await latency(score, batches_of(pool, size), seconds, CLIENTS)
                got = lat[name, size]
                print(
                    f"  HTTP       {name:12s} batch {size:4d} x{CLIENTS} clients: "
                    f"p50 {got.p50_ms:.1f} ms, p99 {got.p99_ms:.1f} ms, {got.rate:.0f} rewards/s"
                )
    return rates, lat, values


def report(results: Results, args: argparse.Namespace) -> None:
    print()
    print(
        f"cpu cores: {os.cpu_count()}   server workers: {args.workers}   in flight: {args.in_flight}   "
        f"{args.seconds:g} s per measurement"
    )
    print(f"{'reward':12s} {'batch':>5s} {'in-process/s':>13s} {'HTTP/s':>10s} {'HTTP/in-proc':>13s}")
    for name in REWARDS:
        for size in BATCH_SIZES:
            base, ours = results.inproc[name, size], results.http[name, size]
            print(f"{name:12s} {size:5d} {base:13.0f} {ours:10.0f} {ours / base:12.2f}x")
    print()
    print(f"{'reward':12s} {'batch':>5s} {'clients':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'rewards/s':>10s}")
    for name in REWARDS:
        for size in LATENCY_BATCHES:
            got = results.latency[name, size]
            print(f"{name:12s} {size:5d} {CLIENTS:7d} {got.p50_ms:8.2f} {got.p99_ms:8.2f} {got.rate:10.0f}")
    print()
    top = max(BATCH_SIZES)
    ratio = {name: results.http[name, top] / results.inproc[name, top] for name in REWARDS}
    print(
        f"batch {top} HTTP/in-process: math {ratio['math']:.2f}x, exact_match {ratio['exact_match']:.2f}x "
        "(target >= 0.9x; meaningful for math, a microsecond rule measures only HTTP+JSON overhead)"
    )
    rule = [f"{results.http['exact_match', size]:.0f}/s at batch {size}" for size in BATCH_SIZES]
    rule += [
        f"{results.latency['exact_match', size].rate:.0f}/s at batch {size} x{CLIENTS} clients"
        for size in LATENCY_BATCHES
    ]
    print(f"rule rewards over HTTP: {', '.join(rule)} (target >= 2000/s)")


async def amain(args: argparse.Namespace) -> None:
    pools = {"exact_match": rule_samples(POOL_SIZE), "math": math_samples(POOL_SIZE)}
    print(f"in-process ({args.in_flight} batches in flight)")
    inproc, inproc_values = await measure_in_process(pools, args.seconds, args.in_flight)
    print(f"HTTP: starting `rewardgym serve` with {args.workers} worker(s)")
    with reward_server(args.workers) as url:
        http, lat, http_values = await measure_http(url, pools, args.seconds, args.in_flight)
    for name in REWARDS:
        if inproc_values[name] != http_values[name]:
            differ = sum(a != b for a, b in zip(inproc_values[name], http_values[name], strict=True))
            print(f"warning: {name}: {differ} of {POOL_SIZE} scores differ between HTTP and in-process")
    report(Results(inproc, http, lat), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement, after a warm-up")
    parser.add_argument("--in-flight", type=int, default=2, help="batches outstanding at once, both sides")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the server")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 1.0
    logging.disable(logging.WARNING)
    asyncio.run(amain(args))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the server was stopped on the way out
        sys.exit(130)

"""Sandbox latency and throughput on a small Python test, against a bare subprocess.

Two baselines, both plain subprocesses with no isolation at all: `python -c CODE` with this
environment's interpreter, site and `.pth` hooks included (what a user's own subprocess
does; the issue's baseline, on which the targets are judged), and `python -I -S -c CODE`
with the very interpreter and flags the sandbox uses (like for like: the same interpreter
start, nothing skipped on one side only). Ours: the bubblewrap sandbox cold (a fresh bwrap
+ interpreter per run) and warm (a pre-imported interpreter in the sandbox forks a fresh,
namespaced child per run). Latency: one run at a time, p50/p99. Throughput: `--concurrency`
runs in flight (default: one per CPU). Targets: cold p50 within 1.3x of bare; warm
throughput at least 3x bare.

Then the code test harness (one solution, 1 or 5 assert tests, each test in a process of
its own) on the warm sandbox, against a bare `python -I -S -c` per test (no isolation, no
verdict channel, nothing killed after a test).

    python bench/bench_sandbox.py [--runs 200] [--harness-runs 100] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rewards.code_tests import AssertTest, CodeTestHarness, CodeTestSuite
from sandbox import RunRequest, RunStatus
from sandbox.bubblewrap import BubblewrapConfig, BubblewrapSandbox

TEST = """
def add(a, b):
    return a + b

assert add(2, 3) == 5
assert add(-1, 1) == 0
print("passed")
"""


SOLUTION = "def add(a, b):\n    return a + b\n"


def bare_runner(argv: list[str]) -> Callable[[], None]:
    def run_once() -> None:
        done = subprocess.run([*argv, TEST], capture_output=True, check=False)
        assert done.stdout == b"passed\n", done

    return run_once


def suite_of(size: int) -> CodeTestSuite:
    return CodeTestSuite(tuple(AssertTest(f"assert add({i}, 1) == {i + 1}") for i in range(size)))


def harness_runner(harness: CodeTestHarness, suite: CodeTestSuite) -> Callable[[], None]:
    def run_once() -> None:
        report = asyncio.run(harness.run(SOLUTION, suite))
        assert report.all_passed, report

    return run_once


def bare_tests_runner(python: str, suite: CodeTestSuite) -> Callable[[], None]:
    """The naive harness: each test in a fresh `python -I -S -c`, its exit status the verdict."""

    def run_once() -> None:
        for test in suite.tests:
            assert isinstance(test, AssertTest)
            done = subprocess.run([python, "-I", "-S", "-c", SOLUTION + test.code], capture_output=True)
            assert done.returncode == 0, done

    return run_once


def sandbox_runner(sandbox: BubblewrapSandbox) -> Callable[[], None]:
    request = RunRequest(code=TEST)

    def run_once() -> None:
        result = sandbox.run_sync(request)
        assert result.status is RunStatus.OK and result.stdout == "passed\n", result

    return run_once


def latency_ms(run_once: Callable[[], None], runs: int) -> tuple[float, float]:
    run_once()  # warm-up, not timed
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def throughput(run_once: Callable[[], None], runs: int, concurrency: int) -> float:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: run_once(), range(concurrency)))  # warm-up
        start = time.perf_counter()
        list(pool.map(lambda _: run_once(), range(runs)))
        return runs / (time.perf_counter() - start)


def measure(rows: dict[str, Callable[[], None]], runs: int, concurrency: int) -> dict[str, tuple[float, ...]]:
    results: dict[str, tuple[float, ...]] = {}
    print(f"{'':34s} {'p50 ms':>8s} {'p99 ms':>8s} {'runs/s':>8s}   (x{concurrency} concurrent)")
    for name, run_once in rows.items():
        p50, p99 = latency_ms(run_once, runs)
        rate = throughput(run_once, runs, concurrency)
        results[name] = (p50, p99, rate)
        print(f"{name:34s} {p50:8.2f} {p99:8.2f} {rate:8.1f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--harness-runs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    cold = BubblewrapSandbox(BubblewrapConfig(warm=False, pool_size=args.concurrency))
    warm = BubblewrapSandbox(BubblewrapConfig(warm=True, pool_size=args.concurrency))
    print(f"isolation: {warm.isolation}; interpreter {warm.python}; {os.cpu_count()} CPUs")
    bare, like = "bare `python -c`", "bare `python -I -S -c` (like for like)"
    results = measure(
        {
            bare: bare_runner([sys.executable, "-c"]),
            like: bare_runner([warm.python, "-I", "-S", "-c"]),
            "sandbox cold": sandbox_runner(cold),
            "sandbox warm": sandbox_runner(warm),
        },
        args.runs,
        args.concurrency,
    )
    cold.close()
    for baseline in (bare, like):
        p50, _, rate = results[baseline][:3]
        print(f"against {baseline}:")
        print(f"  cold p50 latency: {results['sandbox cold'][0] / p50:.2f}x (target <= 1.3x)")
        print(f"  warm throughput:  {results['sandbox warm'][2] / rate:.2f}x (target >= 3x)")
        print(f"  warm p50 latency: {results['sandbox warm'][0] / p50:.2f}x")
    print("the targets are judged against the first, the issue's bare `python -c`")

    harness = CodeTestHarness(sandbox=warm)
    rows: dict[str, Callable[[], None]] = {}
    for size in (1, 5):
        suite = suite_of(size)
        rows[f"harness, {size} test(s), warm"] = harness_runner(harness, suite)
        rows[f"bare -I -S per test, {size} test(s)"] = bare_tests_runner(warm.python, suite)
    print(f"\ncode test harness, one solution per run ({args.harness_runs} runs):")
    harness_results = measure(rows, args.harness_runs, args.concurrency)
    warm.close()
    for size in (1, 5):
        ours = harness_results[f"harness, {size} test(s), warm"]
        theirs = harness_results[f"bare -I -S per test, {size} test(s)"]
        print(
            f"{size} test(s): harness p50 {ours[0] / theirs[0]:.2f}x of bare, "
            f"throughput {ours[2] / theirs[2]:.2f}x bare"
        )


if __name__ == "__main__":
    main()

"""Sandbox latency and throughput on a small Python test, against a bare subprocess.

Baseline: `python -c CODE` as a plain subprocess, no isolation at all, with this
machine's real interpreter (not a shell shim). Ours: the bubblewrap sandbox cold (a
fresh bwrap + interpreter per run) and warm (a pre-imported interpreter in the sandbox
forks a fresh, namespaced child per run). Latency: one run at a time, p50/p99.
Throughput: `--concurrency` runs in flight (default: one per CPU).
Targets: cold p50 within 1.3x of bare; warm throughput at least 3x bare.

    python bench/bench_sandbox.py [--runs 200] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sandbox import RunRequest, RunStatus
from sandbox.bubblewrap import BubblewrapConfig, BubblewrapSandbox

TEST = """
def add(a, b):
    return a + b

assert add(2, 3) == 5
assert add(-1, 1) == 0
print("passed")
"""


def bare_run() -> None:
    done = subprocess.run([sys.executable, "-c", TEST], capture_output=True, check=False)
    assert done.stdout == b"passed\n", done


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    cold = BubblewrapSandbox(BubblewrapConfig(warm=False, pool_size=args.concurrency))
    warm = BubblewrapSandbox(BubblewrapConfig(warm=True, pool_size=args.concurrency))
    print(f"isolation: {warm.isolation}; interpreter {warm.python}; {os.cpu_count()} CPUs")
    rows = {
        "bare subprocess": bare_run,
        "sandbox cold": sandbox_runner(cold),
        "sandbox warm": sandbox_runner(warm),
    }
    results: dict[str, tuple[float, float, float]] = {}
    print(f"{'':18s} {'p50 ms':>8s} {'p99 ms':>8s} {'runs/s':>8s}   (x{args.concurrency} concurrent)")
    for name, run_once in rows.items():
        p50, p99 = latency_ms(run_once, args.runs)
        rate = throughput(run_once, args.runs, args.concurrency)
        results[name] = (p50, p99, rate)
        print(f"{name:18s} {p50:8.2f} {p99:8.2f} {rate:8.1f}")
    cold.close()
    warm.close()
    bare_p50, _, bare_rate = results["bare subprocess"]
    cold_ratio = results["sandbox cold"][0] / bare_p50
    warm_ratio = results["sandbox warm"][2] / bare_rate
    print(f"cold p50 latency / bare: {cold_ratio:.2f}x (target <= 1.3x)")
    print(f"warm throughput / bare:  {warm_ratio:.2f}x (target >= 3x)")
    print(f"warm p50 latency / bare: {results['sandbox warm'][0] / bare_p50:.2f}x")


if __name__ == "__main__":
    main()

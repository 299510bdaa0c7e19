"""Math reward throughput: our worker pool (hard timeouts) vs math_verify called in-process.

Baseline: what a user does without rewardgym, `verify(parse(gold), parse(completion))` in
the main thread with math-verify's own signal-based timeouts. Ours: `MathEquivalence`
over the worker pool (answer extraction, IPC, a hard kill on overrun). Same samples, same
process run; both warmed up first. Target: ours >= 0.8x the baseline.

    python bench/bench_math_reward.py [--samples 2000] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import time
from fractions import Fraction

from rewards import MathEquivalence, MathVerifier, Sample


def workload(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(gold, completion) pairs mixing integers, fractions, decimals and expressions; ~1/3 wrong."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        kind = i % 4
        wrong = rng.random() < 0.33
        if kind == 0:
            value = rng.randint(-999, 9999)
            gold, shown = str(value), str(value + (1 if wrong else 0))
        elif kind == 1:
            frac = Fraction(rng.randint(1, 50), rng.randint(2, 50))
            gold = f"\\frac{{{frac.numerator}}}{{{frac.denominator}}}"
            k = rng.randint(2, 5)
            shown = f"\\frac{{{frac.numerator * k + (1 if wrong else 0)}}}{{{frac.denominator * k}}}"
        elif kind == 2:
            value = rng.randint(1, 999) / 4
            gold, shown = str(value), f"{value + (0.5 if wrong else 0):.2f}"
        else:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            gold = f"x^2 + {a + b}x + {a * b}"
            shown = f"(x+{a})(x+{b + (1 if wrong else 0)})"
        pairs.append((gold, f"Working it out step by step, we get \\boxed{{{shown}}}."))
    return pairs


def direct(pairs: list[tuple[str, str]]) -> tuple[float, int]:
    from math_verify import parse, verify

    start = time.perf_counter()
    correct = sum(bool(verify(parse(f"${gold}$"), parse(completion))) for gold, completion in pairs)
    return time.perf_counter() - start, correct


def pooled(pairs: list[tuple[str, str]], reward: MathEquivalence) -> tuple[float, int]:
    samples = [Sample.from_completion(completion, gold) for gold, completion in pairs]
    start = time.perf_counter()
    scores = asyncio.run(reward.score_batch(samples))
    elapsed = time.perf_counter() - start
    errors = [s.error for s in scores if s.error]
    if errors:
        raise RuntimeError(f"{len(errors)} errors, e.g. {errors[0]}")
    return elapsed, sum(bool(s.passed) for s in scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    pairs = workload(args.samples)
    warm = workload(50, seed=1)
    verifier = MathVerifier(num_workers=args.workers)
    reward = MathEquivalence(verifier=verifier)
    direct(warm)
    pooled(warm, reward)

    base_s, base_correct = direct(pairs)
    ours_s, ours_correct = pooled(pairs, reward)
    verifier.close()
    base_rate, ours_rate = len(pairs) / base_s, len(pairs) / ours_s
    print(f"samples: {len(pairs)}   cpu cores: {os.cpu_count()}   pool workers: {args.workers}")
    print(f"baseline  math_verify in-process : {base_rate:8.0f} rewards/s  ({base_correct} correct)")
    print(f"rewardgym worker pool, hard kill : {ours_rate:8.0f} rewards/s  ({ours_correct} correct)")
    print(f"ratio ours/baseline: {ours_rate / base_rate:.2f}x   (target >= 0.8x)")


if __name__ == "__main__":
    main()

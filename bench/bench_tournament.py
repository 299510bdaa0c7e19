"""Tournament wall time: concurrent matchups vs the same matchups awaited one by one.

A group of G = 8 fixed completions of one prompt, judged by `Tournament(schedule="all_pairs")`:
28 pairs, each in both positions, 56 judge questions. Baseline: `concurrent=False`, every
question awaited before the next is asked (the anchors' way). Ours: every matchup issued at
once, the judge client bounding the questions in flight, so the model server can batch them.
Both ask the same endpoint the same questions; each run gets a fresh cache-less client (a
cache would answer the second run for free). Runs alternate which side goes first; the
medians are reported, with questions/s, and the tournament's position consistency and tie
rate (the judge's quality on this group, not a speed figure).

By default the benchmark starts `rewardgym serve-model` with the embedded Gemma 3 270M, a
base model judged through the completions API with the few-shot pairwise prompt (the
out-of-the-box local judge); `--max-batch-size` is the server's batch size. `--model DIR`
serves any local model instead; `--base-url` benchmarks an endpoint that is already running.

    python bench/bench_tournament.py [--repeats 2] [--group 8] [--model gemma-3-270m] [--quick]
    python bench/bench_tournament.py --base-url http://127.0.0.1:8001/v1 --served-name gemma
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rewards import Sample
from rewards.judges import JudgeConfig, Tournament
from trainer.local_server import rewardgym_server

PROMPT = "Give one tip for staying focused while studying."
COMPLETIONS = (  # fixed, from helpful to useless, so the judge has something to decide
    "Put your phone in another room and study in 25-minute blocks with short breaks.",
    "Turn off notifications and keep only the material you need on your desk.",
    "Set a clear goal for each session, such as finishing one chapter.",
    "Drink some water and take a break when you feel tired.",
    "Studying is important, so you should focus on it.",
    "Focus is when you pay attention to something.",
    "I like pizza and long walks on the beach.",
    "study study study study study",
    "Try studying in a quiet library, away from friends and the TV.",
    "Explain what you learned to a friend; it shows what you still do not understand.",
)


@dataclass
class Run:
    """One tournament: its wall time and what the group metrics and client counters said."""

    mode: str  # "concurrent" or "sequential"
    seconds: float
    questions: int  # HTTP questions the client asked (resamples included)
    failed_matchups: int
    position_consistency: float
    tie_rate: float
    values: list[float]


def group(size: int) -> list[Sample]:
    if not 2 <= size <= len(COMPLETIONS):
        raise SystemExit(f"--group must be between 2 and {len(COMPLETIONS)}, got {size}")
    return [Sample.from_completion(c, prompt=PROMPT, task_id="focus") for c in COMPLETIONS[:size]]


async def tournament_once(config: JudgeConfig, samples: list[Sample], *, concurrent: bool) -> Run:
    """One timed tournament through a fresh client (no cache, nothing carried over)."""
    client = config.client()
    try:
        tournament = Tournament(config.pairwise(client), schedule="all_pairs", concurrent=concurrent)
        start = time.perf_counter()
        scores = await tournament.score_group(samples)
        seconds = time.perf_counter() - start
    finally:
        await client.close()
    metrics = scores[0].info.get("group_metrics", {})
    return Run(
        mode="concurrent" if concurrent else "sequential",
        seconds=seconds,
        questions=client.counters()["calls"],
        failed_matchups=int(metrics.get("failed_matchups", 0)),
        position_consistency=float(metrics.get("position_consistency", float("nan"))),
        tie_rate=float(metrics.get("tie_rate", float("nan"))),
        values=[s.value for s in scores],
    )


async def measure(config: JudgeConfig, args: argparse.Namespace) -> list[Run]:
    samples = group(args.group)
    print("warm-up: a 3-completion tournament")
    await tournament_once(config, samples[:3], concurrent=True)
    runs: list[Run] = []
    for r in range(args.repeats):
        order = (True, False) if r % 2 == 0 else (False, True)
        for concurrent in order:
            run = await tournament_once(config, samples, concurrent=concurrent)
            runs.append(run)
            print(
                f"  repeat {r + 1} {run.mode:10s} {run.seconds:7.2f} s  {run.questions} questions  "
                f"consistency {run.position_consistency:.2f}  ties {run.tie_rate:.2f}  "
                f"failed matchups {run.failed_matchups}"
            )
    return runs


def report(runs: list[Run], args: argparse.Namespace, judge: str) -> None:
    print()
    print(
        f"judge: {judge} ({args.api}, few-shot {'on' if args.few_shot else 'off'})   G = {args.group}, "
        f"all_pairs   client max_concurrency {args.max_concurrency}   cpu cores: {os.cpu_count()}"
    )
    print(
        f"{'mode':11s} {'median s':>9s} {'min s':>7s} {'questions':>9s} {'questions/s':>11s} "
        f"{'consistency':>11s} {'tie rate':>8s} {'failed':>6s}"
    )
    medians = {}
    for mode in ("sequential", "concurrent"):
        mine = [r for r in runs if r.mode == mode]
        median = statistics.median(r.seconds for r in mine)
        medians[mode] = median
        questions = statistics.median(r.questions for r in mine)
        print(
            f"{mode:11s} {median:9.2f} {min(r.seconds for r in mine):7.2f} {questions:9.0f} "
            f"{questions / median:11.2f} {statistics.mean(r.position_consistency for r in mine):11.2f} "
            f"{statistics.mean(r.tie_rate for r in mine):8.2f} {sum(r.failed_matchups for r in mine):6d}"
        )
    print(f"\nsequential / concurrent wall time: {medians['sequential'] / medians['concurrent']:.2f}x")
    first = {mode: next(r.values for r in runs if r.mode == mode) for mode in medians}
    if first["sequential"] != first["concurrent"]:
        print("note: the two modes' scores differ (a batched forward pass may round differently)")


# -- the judge endpoint --------------------------------------------------------------------------


@contextlib.contextmanager
def model_server(args: argparse.Namespace, timeout_s: float = 600.0) -> Iterator[str]:
    """`rewardgym serve-model` as a subprocess in its own process group; stopped however we leave."""
    argv = ["serve-model", "--model", args.model, "--served-name", args.served_name, "--device", args.device]
    argv += ["--max-batch-size", str(args.max_batch_size), "--max-tokens", "8"]
    started = time.perf_counter()
    with rewardgym_server(argv, timeout_s=timeout_s) as url:
        print(f"serve-model up in {time.perf_counter() - started:.1f} s")
        yield f"{url}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="a local model directory (or gemma-3-270m)")
    parser.add_argument("--base-url", help="an already running OpenAI-compatible judge endpoint (…/v1)")
    parser.add_argument("--served-name", default="judge", help="the judge's model name at the endpoint")
    parser.add_argument("--api", choices=["completions", "chat"], default="completions")
    parser.add_argument("--no-few-shot", dest="few_shot", action="store_false", help="zero-shot prompt")
    parser.add_argument("--group", type=int, default=8, help="G completions in the tournament")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each mode")
    parser.add_argument(
        "--max-concurrency", type=int, default=16, help="the judge client's questions in flight"
    )
    parser.add_argument("--max-batch-size", type=int, default=16, help="serve-model's batch size")
    parser.add_argument("--device", default="auto", help="serve-model's device")
    parser.add_argument("--quick", action="store_true", help="G = 4 (12 questions), 1 repeat: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.group, args.repeats = 4, 1

    def config(base_url: str) -> JudgeConfig:
        return JudgeConfig(
            base_url=base_url,
            model=args.served_name,
            api=args.api,
            few_shot=args.few_shot,
            max_concurrency=args.max_concurrency,
            timeout_s=300.0,  # a CPU server with a full batch queue answers slowly, not never
        )

    if args.base_url:
        runs = asyncio.run(measure(config(args.base_url), args))
        report(runs, args, f"{args.served_name} at {args.base_url}")
        return
    with model_server(args) as url:
        runs = asyncio.run(measure(config(url), args))
    report(runs, args, f"{args.model} via serve-model --max-batch-size {args.max_batch_size}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

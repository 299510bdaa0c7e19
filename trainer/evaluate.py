"""The evaluator: run environments (or a suite) against a policy and summarise.

Episodes run concurrently up to `concurrency` (which the transformers engine turns into
batch size); each finished episode is appended to `samples.jsonl` at once, so a killed
run keeps what it did. The summary has, per environment: mean reward, pass rate, mean
of every reward component, turns, tokens, truncations, and counts of errors, which are
never folded into the means as zeros.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from envs.core import MultiTurnEnv
from envs.registration import make
from envs.suites import Suite
from rewards.base import Reward
from rewards.types import mean_or_nan
from rewards.wire import jsonable
from trainer.engines.base import Engine, SamplingParams
from trainer.rollout import EpisodeResult, play_episode


@dataclass(frozen=True)
class EvalTarget:
    """One environment to evaluate, and its weight in the overall mean."""

    name: str
    make_env: Callable[[], MultiTurnEnv]
    weight: float = 1.0


def targets_from_ids(
    env_ids: Sequence[str],
    env_kwargs: dict[str, Any] | None = None,
    rewards: Mapping[str, Reward] | None = None,
) -> list[EvalTarget]:
    """Targets for environment ids; `rewards` replaces the reward of the ids it names (e.g.
    with a `RemoteReward` served under the environment's id)."""
    kwargs = dict(env_kwargs or {})
    chosen = dict(rewards or {})

    def maker(env_id: str) -> Callable[[], MultiTurnEnv]:
        extra = {"reward": chosen[env_id]} if env_id in chosen else {}
        return lambda: make(env_id, **kwargs, **extra)

    return [EvalTarget(env_id, maker(env_id)) for env_id in env_ids]


def targets_from_suite(suite: Suite) -> list[EvalTarget]:
    return [EvalTarget(m.name, m.make_env, m.weight) for m in suite.members]


@dataclass(frozen=True)
class EnvSummary:
    name: str
    weight: float
    episodes: int
    mean_reward: float  # over episodes that were scored (errors excluded, and counted below)
    pass_rate: float  # over episodes whose reward gives a pass/fail verdict
    reward_errors: int
    episode_errors: int  # the policy or the environment failed
    mean_turns: float
    mean_tokens: float
    truncated_rate: float
    components: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)  # means of the environment's own metrics


@dataclass(frozen=True)
class EvalReport:
    summaries: list[EnvSummary]
    weighted_mean_reward: float
    seconds: float
    samples_path: Path | None

    def to_json(self) -> dict[str, Any]:
        return {
            "weighted_mean_reward": jsonable(self.weighted_mean_reward),
            "seconds": round(self.seconds, 2),
            "samples": str(self.samples_path) if self.samples_path else None,
            "envs": [jsonable(asdict(s)) for s in self.summaries],
        }


def summarise(name: str, weight: float, results: Sequence[EpisodeResult]) -> EnvSummary:
    scored = [r for r in results if r.error is None and not math.isnan(r.reward)]
    verdicts = [r.passed for r in scored if r.passed is not None]
    component_values: dict[str, list[float]] = defaultdict(list)
    for r in scored:
        for key, value in r.components.items():
            component_values[key].append(value)
    metric_values: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for key, value in r.metrics.items():
            metric_values[key].append(float(value))
    return EnvSummary(
        name=name,
        weight=weight,
        episodes=len(results),
        mean_reward=mean_or_nan([r.reward for r in scored]),
        pass_rate=mean_or_nan([float(v) for v in verdicts]),
        reward_errors=sum(1 for r in results if r.reward_error is not None),
        episode_errors=sum(1 for r in results if r.error is not None),
        mean_turns=mean_or_nan([float(r.turns) for r in results]),
        mean_tokens=mean_or_nan([float(r.num_tokens) for r in results]),
        truncated_rate=mean_or_nan([float(r.truncated) for r in results]),
        components={k: mean_or_nan(v) for k, v in sorted(component_values.items())},
        metrics={k: mean_or_nan(v) for k, v in sorted(metric_values.items())},
    )


async def evaluate(
    targets: Sequence[EvalTarget],
    engine: Engine,
    *,
    num_tasks: int,
    samples_per_task: int = 1,
    concurrency: int = 8,
    params: SamplingParams | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> EvalReport:
    """Evaluate every target on `num_tasks` tasks (a seeded random subset), `samples_per_task` times each."""
    if num_tasks < 1 or samples_per_task < 1 or concurrency < 1:
        raise ValueError("num_tasks, samples_per_task and concurrency must all be at least 1")
    params = params or SamplingParams(temperature=0.0)
    start = time.monotonic()
    idle_envs: dict[str, asyncio.Queue[MultiTurnEnv]] = {}
    made: dict[str, int] = defaultdict(int)
    jobs = []
    for target in targets:
        probe = target.make_env()
        tasks = probe.tasks.shuffled(seed).take(num_tasks)
        idle_envs[target.name] = asyncio.Queue()
        idle_envs[target.name].put_nowait(probe)
        made[target.name] = 1
        jobs += [(target, task, k) for task in tasks for k in range(samples_per_task)]

    samples_path = None
    sink = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        samples_path = out_dir / "samples.jsonl"
        sink = samples_path.open("w", encoding="utf-8")

    results: dict[str, list[EpisodeResult]] = defaultdict(list)
    scored = {"count": 0, "total": 0.0}  # for the progress bar's running mean
    gate = asyncio.Semaphore(concurrency)
    progress = Progress(
        TextColumn("[bold]eval[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    bar = progress.add_task("", total=len(jobs))

    async def run_one(index: int, target: EvalTarget, task: Any, sample_index: int) -> None:
        async with gate:
            pool = idle_envs[target.name]
            if pool.empty() and made[target.name] < concurrency:
                made[target.name] += 1
                env = target.make_env()
            else:
                env = await pool.get()
            try:
                result = await play_episode(
                    env,
                    engine,
                    params,
                    task=task,
                    env_name=target.name,
                    seed=seed + index,
                    sample_index=sample_index,
                )
            finally:
                pool.put_nowait(env)
        results[target.name].append(result)
        if sink is not None:
            sink.write(json.dumps(result.to_json()) + "\n")
            sink.flush()
        if not math.isnan(result.reward):
            scored["count"] += 1
            scored["total"] += result.reward
        running_mean = scored["total"] / scored["count"] if scored["count"] else math.nan
        progress.update(bar, advance=1, description=f"mean reward {running_mean:.3f}")

    try:
        with progress:
            await asyncio.gather(*(run_one(i, *job) for i, job in enumerate(jobs)))
    finally:
        if sink is not None:
            sink.close()
        for pool in idle_envs.values():
            while not pool.empty():
                pool.get_nowait().close()

    summaries = [summarise(t.name, t.weight, results[t.name]) for t in targets]
    weighted = [(s.weight, s.mean_reward) for s in summaries if not math.isnan(s.mean_reward)]
    total_weight = sum(w for w, _ in weighted)
    overall = sum(w * m for w, m in weighted) / total_weight if total_weight else math.nan
    report = EvalReport(summaries, overall, time.monotonic() - start, samples_path)
    if out_dir is not None:
        (out_dir / "summary.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


TABLE_METRICS = ("tool_calls", "tool_errors")  # environment metrics worth a column when present


def report_table(report: EvalReport) -> Table:
    """The summary as a rich table: one row per environment, one column per reward component."""
    fmt = lambda x: "-" if math.isnan(x) else f"{x:.3f}"  # noqa: E731
    components = sorted({c for s in report.summaries for c in s.components})
    tool_columns = [m for m in TABLE_METRICS if any(m in s.metrics for s in report.summaries)]
    table = Table(title=f"evaluation ({report.seconds:.0f} s)")
    table.add_column("env", no_wrap=True)
    for column in ("n", "reward", "pass", "errors", "turns", "tokens", "trunc", *tool_columns, *components):
        table.add_column(column.replace("_", " "), justify="right")
    for s in report.summaries:
        table.add_row(
            s.name,
            str(s.episodes),
            fmt(s.mean_reward),
            fmt(s.pass_rate),
            f"{s.reward_errors + s.episode_errors}",
            fmt(s.mean_turns),
            "-" if math.isnan(s.mean_tokens) else f"{s.mean_tokens:.1f}",
            fmt(s.truncated_rate),
            *(fmt(s.metrics.get(m, math.nan)) for m in tool_columns),
            *(fmt(s.components.get(c, math.nan)) for c in components),
        )
    if len(report.summaries) > 1:
        blanks = [""] * (len(table.columns) - 3)  # every column after env, n and reward
        table.add_row("weighted mean", "", fmt(report.weighted_mean_reward), *blanks)
    table.caption = "reward and components: means over scored episodes; errors: reward + episode failures"
    return table

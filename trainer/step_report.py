"""What a training step reports: its metrics row, readable rollout samples, a progress bar.

Kept apart from the loop in `grpo.py` so the loop reads top to bottom.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from typing import Any

import torch.distributed as dist

from trainer.advantages import overlong_penalty
from trainer.config import TrainConfig
from trainer.rollouts import RolloutGroup, StepRollouts
from trainer.samples import SampleGroup, SampleMember

logger = logging.getLogger(__name__)


def rollout_metrics(rollouts: StepRollouts, config: TrainConfig, world_size: int) -> dict[str, float]:
    """Reward and length statistics over every rank's groups."""
    buffer = config.loss.overlong_buffer
    rows = [
        (
            g.member,
            r,
            t.episode.num_tokens,
            dict(t.episode.components),
            dict(t.episode.metrics),
            math.nan
            if buffer is None
            else overlong_penalty(t.reply_lengths, config.rollout.max_tokens, buffer),
        )
        for g in rollouts.groups
        for r, t in zip(g.rewards_G, g.trajectories, strict=True)
    ]
    episodes = [t.episode for g in [*rollouts.groups, *rollouts.failed] for t in g.trajectories]
    counts = [
        len(rollouts.groups),
        len(rollouts.failed),
        rollouts.zero_std,
        rollouts.dropped_zero_std,
        rollouts.sampled,
        sum(t.num_sampled for g in rollouts.groups for t in g.trajectories),
        sum(1 for e in episodes if e.error or e.reward_error or not math.isfinite(e.reward)),
        sum(1 for e in episodes if e.reward_error and not e.error),
    ]
    group_metrics = [dict(g.group_metrics) for g in [*rollouts.groups, *rollouts.failed] if g.group_metrics]
    if world_size > 1:
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, (rows, counts, group_metrics))
        rows = [row for part, _, _ in gathered for row in part]
        counts = [sum(c) for c in zip(*(c for _, c, _ in gathered), strict=True)]
        group_metrics = [m for _, _, part in gathered for m in part]
    trained, failed, zero_std, dropped, sampled, sampled_tokens, failed_episodes, reward_errors = counts
    rewards = [row[1] for row in rows]
    lengths = [row[2] for row in rows]
    metrics: dict[str, float] = {
        "reward/mean": statistics.fmean(rewards) if rewards else math.nan,
        "reward/std": _std(rewards),
        "frac_zero_std": zero_std / max(sampled - failed, 1),
        "episodes/skipped_groups": float(failed),
        "episodes/errors": float(failed_episodes),  # the env, the policy or the reward failed
        "episodes/reward_errors": float(reward_errors),  # of those, the reward (e.g. a server down)
        "groups/trained": float(trained),
        "groups/dropped_zero_std": float(dropped),
        "length/completion_mean": statistics.fmean(lengths) if lengths else math.nan,
        "length/completion_max": float(max(lengths, default=0)),
        "_tokens": float(sampled_tokens),
    }
    if buffer is not None:  # what DAPO's soft overlong penalty took off the rewards, on average
        penalties = [row[5] for row in rows]
        metrics["reward/overlong_penalty"] = statistics.fmean(penalties) if penalties else math.nan
    by_member: dict[str, list[float]] = defaultdict(list)
    by_component: dict[str, list[float]] = defaultdict(list)
    by_env_metric: dict[str, list[float]] = defaultdict(list)
    for member, reward, _, components, env_metrics, _ in rows:
        by_member[member].append(reward)
        for name, value in components.items():
            if not math.isnan(value):
                by_component[name].append(value)
        for name, value in env_metrics.items():  # the environment's own: turns, tool calls, ...
            by_env_metric[name].append(float(value))
    for member, values in by_member.items():
        metrics[f"reward/{member}/mean"] = statistics.fmean(values)
        metrics[f"reward/{member}/std"] = _std(values)
    for name, values in by_component.items():
        metrics[f"component/{name}/mean"] = statistics.fmean(values)
        metrics[f"component/{name}/std"] = _std(values)
    for name, values in by_env_metric.items():
        metrics[f"env_metric/{name}/mean"] = statistics.fmean(values)
    by_group_metric: dict[str, list[float]] = defaultdict(list)
    for group in group_metrics:  # the group reward's own: a tournament's tie rate, failed matchups, ...
        for name, value in group.items():
            if not math.isnan(value):
                by_group_metric[name].append(float(value))
    for name, values in by_group_metric.items():
        metrics[f"group_metric/{name}/mean"] = statistics.fmean(values)
    if rollouts.failed:
        logger.warning(
            "step skipped %d failed group(s); first error: %s",
            len(rollouts.failed),
            rollouts.failed[0].first_error,
        )
    return metrics


def _std(values: list[float]) -> float:
    """Population standard deviation over the step's episodes (NaN for fewer than two)."""
    return statistics.pstdev(values) if len(values) > 1 else math.nan


def sample_groups(groups: list[RolloutGroup], advantages: list[list[float]]) -> list[SampleGroup]:
    shown = []
    for group, group_advantages_G in list(zip(groups, advantages, strict=True))[:4]:
        members = tuple(
            SampleMember(
                reward=reward,
                advantage=advantage,
                messages=tuple(t.episode.messages),
                components=dict(t.episode.components),
                error=t.episode.error,
                finish_reasons=t.episode.finish_reasons,
                num_tokens=t.episode.num_tokens,
            )
            for t, reward, advantage in zip(
                group.trajectories, group.rewards_G, group_advantages_G, strict=True
            )
        )
        reference = None if group.task.answer is None else str(group.task.answer)
        opening = group.trajectories[0].episode.prompt_messages
        shown.append(
            SampleGroup(
                env=group.member,
                task_id=group.task.id,
                reference=reference,
                members=members,
                prompt_messages=opening,
            )
        )
    return shown


class Progress:
    """A rich progress bar with the latest reward (silent when disabled)."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, status="")

    def update(self, done: int, metrics: dict[str, float]) -> None:
        if self.progress is None:
            return
        status = (
            f"reward {metrics['reward/mean']:.3f}  loss {metrics['loss']:.4f}  "
            f"len {metrics['length/completion_mean']:.0f}  {metrics['time/step']:.1f}s/step"
        )
        self.progress.update(self.task, completed=done, status=status)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()

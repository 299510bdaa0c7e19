"""Rollout workers: groups of G episodes per task, many groups at once, at token level.

Which task a group plays and every sampling seed are pure functions of (seed, step, slot,
attempt), so a step's batch is the same whether the run went straight through or was
resumed from a checkpoint, and each rank of a data-parallel run takes its own slots.

A group whose episodes failed (the environment raised, the policy or a remote reward was
unreachable) is skipped and counted, never trained on with a made-up reward.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from envs.groups import EnvGroup
from envs.suites import Suite, SuiteMember
from envs.tasks import Task
from trainer.engines.base import Engine, SamplingParams
from trainer.rollout import EpisodeResult, TokenLog, play_episode


@dataclass(frozen=True)
class Trajectory:
    """One episode with its token sequence (see `TokenLog`)."""

    episode: EpisodeResult
    token_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]
    sampler_logprobs: tuple[float, ...]
    prompt_length: int
    env_spans: tuple[tuple[int, int], ...]  # environment/tool tokens inserted between replies
    tool_spans: tuple[tuple[int, int], ...] = ()  # one per tool result: its content's tokens

    @property
    def num_sampled(self) -> int:
        return sum(self.loss_mask)

    @property
    def reply_lengths(self) -> tuple[int, ...]:
        """Sampled tokens of each reply: the runs of the loss mask, split where the environment
        spoke (so two replies stay apart even if its tokens between them were none)."""
        breaks = {begin for begin, _ in self.env_spans}
        lengths: list[int] = []
        previous = False
        for position, sampled in enumerate(self.loss_mask):
            if sampled and (not previous or position in breaks):
                lengths.append(0)
            if sampled:
                lengths[-1] += 1
            previous = sampled
        return tuple(lengths)


@dataclass(frozen=True)
class RolloutGroup:
    member: str  # the suite member (environment) name
    task: Task
    trajectories: tuple[Trajectory, ...]
    rewards_G: tuple[float, ...]  # episode reward plus the group reward, NaN where it failed
    slot: int  # position in the step, for reproducible ordering
    group_error: str | None = None  # why the group reward failed, if it did
    group_metrics: Mapping[str, float] = field(default_factory=dict)  # the group reward's own (tie rate, ...)

    @property
    def failed(self) -> bool:
        """Some reward is missing (NaN: an error) or not finite (a broken reward function)."""
        return not all(math.isfinite(r) for r in self.rewards_G)

    @property
    def first_error(self) -> str | None:
        for trajectory in self.trajectories:
            episode = trajectory.episode
            if episode.error or episode.reward_error:
                return episode.error or f"reward: {episode.reward_error}"
        if self.group_error:
            return f"group reward: {self.group_error}"
        return None if not self.failed else f"non-finite rewards {list(self.rewards_G)}"


@dataclass
class StepRollouts:
    """Everything one rank collected for one step."""

    groups: list[RolloutGroup] = field(default_factory=list)  # trainable groups, in slot order
    failed: list[RolloutGroup] = field(default_factory=list)
    dropped_zero_std: int = 0  # dropped by dynamic sampling
    zero_std: int = 0  # zero-variance groups seen (kept or not)
    sampled: int = 0  # groups played in total
    seconds: float = 0.0
    env_seconds: float = 0.0  # summed over episodes: time inside environments and rewards


class RolloutCollector:
    def __init__(
        self,
        suite: Suite,
        engine: Engine,
        params: SamplingParams,
        *,
        group_size: int,
        groups_per_step: int,
        seed: int,
        max_concurrent_groups: int = 64,
        dynamic_sampling: str = "off",
        max_refill_rounds: int = 4,
        group_reward_weight: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if engine.renderer is None:
            raise ValueError(f"the {engine.name} engine works on text only; training needs token ids")
        if groups_per_step % world_size:
            raise ValueError(
                f"groups_per_step ({groups_per_step}) must be divisible by the {world_size} ranks"
            )
        self.suite = suite
        self.engine = engine
        self.params = params
        self.group_size = group_size
        self.groups_per_step = groups_per_step
        self.seed = seed
        self.dynamic_sampling = dynamic_sampling
        self.max_refill_rounds = max_refill_rounds
        self.group_reward_weight = group_reward_weight
        self.rank = rank
        self.world_size = world_size
        self._limit = asyncio.Semaphore(max_concurrent_groups)
        self._idle: dict[str, list[EnvGroup]] = defaultdict(list)  # envs are reused across groups

    async def collect(self, step: int) -> StepRollouts:
        start = time.monotonic()
        result = StepRollouts()
        wanted = self.groups_per_step // self.world_size
        slots = list(range(self.rank, self.groups_per_step, self.world_size))
        next_slot = self.groups_per_step + self.rank
        for round_index in range(1 + (self.max_refill_rounds if self.dynamic_sampling == "refill" else 0)):
            played = await asyncio.gather(*(self._play_group(step, slot) for slot in slots))
            result.sampled += len(played)
            for group in played:
                result.env_seconds += sum(t.episode.env_seconds for t in group.trajectories)
                if group.failed:
                    result.failed.append(group)
                    continue
                if _zero_std(group.rewards_G):
                    result.zero_std += 1
                    if self.dynamic_sampling != "off":
                        result.dropped_zero_std += 1
                        continue
                result.groups.append(group)
            missing = wanted - len(result.groups)
            if self.dynamic_sampling != "refill" or missing <= 0 or round_index == self.max_refill_rounds:
                break
            slots = [next_slot + i * self.world_size for i in range(missing)]
            next_slot += missing * self.world_size
        result.groups = result.groups[:wanted] if self.dynamic_sampling == "refill" else result.groups
        result.seconds = time.monotonic() - start
        return result

    async def _play_group(self, step: int, slot: int) -> RolloutGroup:
        rng = np.random.default_rng([self.seed, step, slot])
        member = self.suite.sample_member(rng)
        async with self._limit:
            group = self._acquire(member)
            try:
                task = group.envs[0].tasks[int(rng.integers(len(group.envs[0].tasks)))]
                base_seed = int(rng.integers(2**31))
                logs = [TokenLog(self.engine.renderer, env.policy_tools) for env in group.envs]  # type: ignore[arg-type]
                episodes = await asyncio.gather(
                    *(
                        play_episode(
                            env,
                            self.engine,
                            _seeded(self.params, base_seed + i),
                            task=task,
                            env_name=member.name,
                            seed=base_seed + i,
                            sample_index=i,
                            tokens=log,
                        )
                        for i, (env, log) in enumerate(zip(group.envs, logs, strict=True))
                    )
                )
                rewards, group_error, group_metrics = await self._group_rewards(group, episodes)
            finally:
                self._idle[member.name].append(group)
        trajectories = tuple(
            Trajectory(
                episode=episode,
                token_ids=tuple(log.token_ids),
                loss_mask=tuple(log.loss_mask),
                sampler_logprobs=tuple(log.sampler_logprobs),
                prompt_length=log.prompt_length,
                env_spans=tuple(log.env_spans),
                tool_spans=tuple(log.tool_spans),
            )
            for episode, log in zip(episodes, logs, strict=True)
        )
        return RolloutGroup(
            member=member.name,
            task=task,
            trajectories=trajectories,
            rewards_G=rewards,
            slot=slot,
            group_error=group_error,
            group_metrics=group_metrics,
        )

    async def _group_rewards(
        self, group: EnvGroup, episodes: Sequence[EpisodeResult]
    ) -> tuple[tuple[float, ...], str | None, Mapping[str, float]]:
        """Rewards with the group reward added, the group reward's error if it failed, and the
        metrics it reported (in any score's `info["group_metrics"]`, e.g. a tournament's)."""
        rewards = tuple(e.reward for e in episodes)
        if group.group_reward is None or any(math.isnan(r) for r in rewards):
            return rewards, None, {}
        try:
            result = await group.finish()
        except Exception as exc:  # the group is skipped and counted; the message is kept
            return tuple(math.nan for _ in rewards), f"{type(exc).__name__}: {exc}", {}
        scores = result.group_scores_G or ()
        errors = [s.error for s in scores if s.error]
        metrics = next((s.info["group_metrics"] for s in scores if "group_metrics" in s.info), {})
        return result.rewards_G, errors[0] if errors else None, dict(metrics)

    def _acquire(self, member: SuiteMember) -> EnvGroup:
        idle = self._idle[member.name]
        if idle:
            return idle.pop()
        return EnvGroup(member.make_env, self.group_size, self.group_reward_weight)

    def close(self) -> None:
        for groups in self._idle.values():
            for group in groups:
                group.close()
        self._idle.clear()


def _seeded(params: SamplingParams, seed: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=seed, logprobs=True)


def _zero_std(rewards_G: Sequence[float]) -> bool:
    return max(rewards_G) - min(rewards_G) < 1e-9

"""Groups: the G environments that play one task together, as GRPO needs.

A group resets its G environments on the same task. When all G episodes are over,
`finish` adds the group-level reward, if the environment defines one (pairwise judge
tournaments, a GAN discriminator scoring the batch): each member's reward becomes its
episode reward plus `group_reward_weight` times its group score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import Task
from rewards.types import Message, Score


@dataclass(frozen=True)
class GroupResult:
    """Final rewards of one group, in member order."""

    rewards_G: tuple[float, ...]  # what the learner uses
    episode_rewards_G: tuple[float, ...]  # from each environment's own reward
    group_scores_G: tuple[Score, ...] | None  # from the group reward, if any

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rewards_G if math.isnan(r))


class EnvGroup:
    """G environments, one task."""

    def __init__(
        self,
        make_env: Callable[[], MultiTurnEnv],
        size: int,
        group_reward_weight: float = 1.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"a group needs at least one member, got size={size}")
        self.envs = [make_env() for _ in range(size)]
        self.group_reward = self.envs[0].group_reward
        self.group_reward_weight = group_reward_weight
        self.task: Task | None = None

    @property
    def size(self) -> int:
        return len(self.envs)

    async def areset(
        self, *, task: Task | None = None, seed: int | None = None
    ) -> list[tuple[list[Message], dict[str, Any]]]:
        """Start all members on `task` (or on the task the seed picks for the first member).

        Members get seeds `seed, seed+1, ...`, so any randomness of their own differs.
        """
        first = self.envs[0]
        options = {"task": task} if task is not None else None
        results = [await first.areset(seed=seed, options=options)]
        assert first.episode is not None
        self.task = first.episode.task
        for i, env in enumerate(self.envs[1:], start=1):
            member_seed = None if seed is None else seed + i
            results.append(await env.areset(seed=member_seed, options={"task": self.task}))
        return results

    async def finish(self) -> GroupResult:
        """Combine episode rewards with the group reward once every member is done."""
        episodes = [env.episode for env in self.envs]
        if any(ep is None or not ep.done for ep in episodes):
            running = [i for i, ep in enumerate(episodes) if ep is None or not ep.done]
            raise RuntimeError(f"group members {running} have not finished their episodes")
        episode_rewards = tuple(ep.last_score.value if ep.last_score else math.nan for ep in episodes)  # type: ignore[union-attr]
        if self.group_reward is None:
            return GroupResult(episode_rewards, episode_rewards, None)
        samples = [env.make_sample(ep) for env, ep in zip(self.envs, episodes, strict=True)]  # type: ignore[arg-type]
        group_scores = tuple(await self.group_reward.score_group(samples))
        totals = tuple(
            r + self.group_reward_weight * s.value for r, s in zip(episode_rewards, group_scores, strict=True)
        )
        return GroupResult(totals, episode_rewards, group_scores)

    def close(self) -> None:
        for env in self.envs:
            env.close()

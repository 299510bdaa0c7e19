"""Playing one episode: an environment and an engine taking turns until the episode ends.

A failure of the policy (server down) or of the environment ends that episode with an
error recorded on it; it never propagates to the other episodes of a run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import Task
from rewards.types import Message
from trainer.engines.base import Engine, Generation, SamplingParams


@dataclass(frozen=True)
class EpisodeResult:
    """One finished (or failed) episode, as the evaluator records it."""

    env_name: str
    task_id: str
    sample_index: int
    messages: tuple[Message, ...]
    reward: float  # the episode's return; NaN when the reward or the episode failed
    components: Mapping[str, float]
    passed: bool | None
    reward_error: str | None
    error: str | None  # the policy or the environment failed ("policy: ...", "env: ...")
    turns: int
    num_tokens: int
    terminated: bool
    truncated: bool
    finish_reasons: tuple[str, ...]
    seconds: float
    generations: tuple[Generation, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record for per-sample output (generations' token ids left out)."""
        return {
            "env": self.env_name,
            "task_id": self.task_id,
            "sample": self.sample_index,
            "reward": None if math.isnan(self.reward) else self.reward,
            "passed": self.passed,
            "components": {k: (None if math.isnan(v) else v) for k, v in self.components.items()},
            "reward_error": self.reward_error,
            "error": self.error,
            "turns": self.turns,
            "num_tokens": self.num_tokens,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "finish_reasons": list(self.finish_reasons),
            "seconds": round(self.seconds, 3),
            "messages": list(self.messages),
        }


async def play_episode(
    env: MultiTurnEnv,
    engine: Engine,
    params: SamplingParams,
    *,
    task: Task,
    env_name: str,
    seed: int | None = None,
    sample_index: int = 0,
) -> EpisodeResult:
    """Run `task` in `env` with replies from `engine` until the episode ends or fails."""
    start = time.monotonic()
    generations: list[Generation] = []
    total = 0.0
    terminated = truncated = False
    info: dict[str, Any] = {}
    error: str | None = None
    messages: list[Message] = []
    try:
        messages, info = await env.areset(seed=seed, options={"task": task})
    except Exception as exc:
        error = f"env: {type(exc).__name__}: {exc}"
    while error is None and not (terminated or truncated):
        budget = env.tokens_left
        turn_params = (
            params if budget is None else replace(params, max_tokens=max(1, min(params.max_tokens, budget)))
        )
        try:
            generation = await engine.generate(messages, turn_params)
        except Exception as exc:
            error = f"policy: {type(exc).__name__}: {exc}"
            break
        generations.append(generation)
        try:
            messages, reward, terminated, truncated, info = await env.astep(
                generation.text, num_tokens=generation.num_tokens
            )
        except Exception as exc:
            error = f"env: {type(exc).__name__}: {exc}"
            break
        total += reward
    return EpisodeResult(
        env_name=env_name,
        task_id=task.id,
        sample_index=sample_index,
        messages=tuple(messages),
        reward=math.nan if error else total,
        components=dict(info.get("reward_components", {})),
        passed=None if error else info.get("passed"),
        reward_error=info.get("reward_error"),
        error=error,
        turns=len(generations),
        num_tokens=sum(g.num_tokens for g in generations),
        terminated=terminated,
        truncated=truncated,
        finish_reasons=tuple(g.finish_reason for g in generations),
        seconds=time.monotonic() - start,
        generations=tuple(generations),
    )

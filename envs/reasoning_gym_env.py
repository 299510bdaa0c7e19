"""Any reasoning-gym generator as an environment, scored by reasoning-gym's own verifier."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from envs.core import MultiTurnEnv
from envs.tasks import ReasoningGymTasks, Split
from rewards.reasoning_gym_score import ReasoningGymScore

SYSTEM_PROMPT = "Think step by step, then give only the final answer between <answer> and </answer> tags."


class ReasoningGymEnv(MultiTurnEnv):
    """One reply per task from the named generator (arithmetic, algebra, logic, puzzles...)."""

    def __init__(
        self,
        dataset: str = "basic_arithmetic",
        *,
        size: int = 1000,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        split: Split = "all",
        eval_fraction: float = 0.2,
        system_prompt: str | None = SYSTEM_PROMPT,
        max_tokens: int | None = None,
        token_counter: Callable[[str], int] | None = None,
        render_mode: str | None = None,
    ) -> None:
        tasks = ReasoningGymTasks(dataset, size=size, seed=seed, config=config)
        super().__init__(
            tasks.split(split, eval_fraction=eval_fraction),
            ReasoningGymScore(),
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            token_counter=token_counter,
            render_mode=render_mode,
        )

"""Optional tool-use shaping: a small bonus for using a tool well, a penalty for failed calls.

It reads the episode's tool counts from `sample.info["tool_use"]` (the tool environment
puts them there), so it composes with any final-answer verifier by weighted sum and can be
served like any other reward.
"""

from __future__ import annotations

from rewards.base import Reward
from rewards.types import Sample, Score

TOOL_USE_KEY = "tool_use"


class ToolUseShaping(Reward):
    """`bonus` when at least one call succeeded, minus `error_penalty` per failed call (at most
    `max_penalty` in all)."""

    def __init__(
        self, bonus: float = 0.0, error_penalty: float = 0.0, max_penalty: float = 1.0, name: str = "tool_use"
    ) -> None:
        if bonus < 0 or error_penalty < 0 or max_penalty < 0:
            raise ValueError("bonus, error_penalty and max_penalty must be >= 0")
        self.bonus = bonus
        self.error_penalty = error_penalty
        self.max_penalty = max_penalty
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        use = sample.info.get(TOOL_USE_KEY)
        if not isinstance(use, dict) or not {"succeeded", "errors"} <= use.keys():
            raise ValueError(
                f"tool-use shaping needs sample.info[{TOOL_USE_KEY!r}] = {{'succeeded': n, 'errors': m}}"
            )
        succeeded, errors = int(use["succeeded"]), int(use["errors"])
        value = self.bonus * (succeeded > 0) - min(self.max_penalty, self.error_penalty * errors)
        return Score(value=value, info={"succeeded": succeeded, "errors": errors})

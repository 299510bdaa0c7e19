"""Group-relative advantages: each rollout's reward compared with the others of its group.

Kept apart from rollouts and losses so other estimators (ARPO's tree advantages) can
replace it. GRPO, DAPO and GSPO divide by the group's standard deviation; Dr. GRPO does
not (the division favours groups that are nearly all right or all wrong). DAPO's soft
overlong penalty shapes the rewards before they are compared (`overlong_penalty`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from rewards.rules import soft_overlong_penalty

AdvantageScale = Literal["std", "none"]


def group_advantages(rewards_G: Sequence[float], *, scale: AdvantageScale, eps: float = 1e-4) -> list[float]:
    """`(r - mean) / (std + eps)` with the sample standard deviation, or just `r - mean`."""
    if len(rewards_G) == 0:
        raise ValueError("a group needs at least one reward")
    if any(math.isnan(r) for r in rewards_G):
        raise ValueError("a group with failed rewards (NaN) has no advantages; drop it first")
    mean = sum(rewards_G) / len(rewards_G)
    centred_G = [r - mean for r in rewards_G]
    if scale == "none":
        return centred_G
    std = group_std(rewards_G)
    return [c / (std + eps) for c in centred_G]


def group_std(rewards_G: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), as TRL computes it; 0 for a group of one."""
    n = len(rewards_G)
    if n < 2:
        return 0.0
    mean = sum(rewards_G) / n
    return math.sqrt(sum((r - mean) ** 2 for r in rewards_G) / (n - 1))


def overlong_penalty(reply_lengths: Sequence[int], max_tokens: int, buffer: int) -> float:
    """DAPO's soft overlong penalty for one episode: 0 to -1 as a reply nears the generation limit.

    DAPO penalises a response for approaching the length the sampler cuts it at. In a
    multi-turn episode that limit is per reply (`rollout.max_tokens`), so each reply is
    measured against it, not the episode's total; the episode gets the penalty of its longest
    reply, which keeps the range DAPO's [-1, 0] however many turns there are. `buffer` is
    clamped to `max_tokens`.
    """
    longest = max(reply_lengths, default=0)
    return soft_overlong_penalty(longest, max_tokens, min(buffer, max_tokens))

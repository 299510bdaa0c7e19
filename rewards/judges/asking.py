"""Asking until a verdict can be read, under a stated policy for replies that cannot be.

Policies (`on_unparseable`):
- "resample" (default): ask again, up to `resamples` times, sampling at temperature 1 with
  seeds 1, 2, ... (so the retries are reproducible and cacheable); if no reply parses, the
  item is an error.
- "error": the item is an error at once.
- "neutral": the item gets the neutral verdict (a tie; the middle of the score range),
  flagged as such in its info.

Every unparseable reply is counted in the client's `stats.unparseable`. A verdict that
could not be read is never scored as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal, TypeVar

from rewards.judges.client import JudgeClient, JudgeReply, JudgeSampling
from rewards.types import Message

Unparseable = Literal["resample", "error", "neutral"]
UNPARSEABLE_POLICIES: tuple[str, ...] = ("resample", "error", "neutral")

T = TypeVar("T")


class UnparseableVerdict(ValueError):
    """No verdict could be read from the judge's replies."""

    def __init__(self, replies: Sequence[str]) -> None:
        shown = "; ".join(repr(r[:80]) for r in replies)
        super().__init__(f"no verdict could be read from {len(replies)} judge replies: {shown}")
        self.replies = list(replies)


def check_policy(policy: str, resamples: int) -> None:
    if policy not in UNPARSEABLE_POLICIES:
        raise ValueError(f"on_unparseable must be one of {UNPARSEABLE_POLICIES}, got {policy!r}")
    if resamples < 0:
        raise ValueError(f"resamples must be 0 or more, got {resamples}")


async def ask_for_verdict(
    client: JudgeClient,
    prompt: str | Sequence[Message],
    sampling: JudgeSampling,
    read: Callable[[JudgeReply], T | None],
    *,
    on_unparseable: Unparseable,
    resamples: int,
) -> T | None:
    """The first reply `read` can parse. None means: unparseable, and the policy is "neutral".

    Raises `UnparseableVerdict` under "error" and "resample" (once resamples are spent), and
    `JudgeUnavailable` when the judge cannot be reached.
    """
    attempts = 1 + (resamples if on_unparseable == "resample" else 0)
    replies: list[str] = []
    for attempt in range(attempts):
        asked = sampling if attempt == 0 else replace(sampling, temperature=1.0, seed=attempt)
        reply = await client.ask(prompt, asked)
        verdict = read(reply)
        if verdict is not None:
            return verdict
        client.stats.unparseable += 1
        replies.append(reply.text)
    if on_unparseable == "neutral":
        return None
    raise UnparseableVerdict(replies)

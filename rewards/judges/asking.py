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

from rewards.base import Reward
from rewards.judges.client import JudgeClient, JudgeReply, JudgeSampling
from rewards.judges.prompts import JudgePrompt
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


class Judge(Reward):
    """What every judge shares: a client, a prompt, chat or plain text, sampling, and the
    unparseable policy. Subclasses build queries and read verdicts."""

    def __init__(
        self,
        client: JudgeClient,
        prompt: JudgePrompt,
        *,
        chat: bool | None,
        sampling: JudgeSampling | None,
        on_unparseable: Unparseable,
        resamples: int,
        name: str,
    ) -> None:
        """`chat`: ask with chat messages (instruction-tuned judges) or plain text (base models);
        None picks by the client's engine (`api="completions"` means text)."""
        check_policy(on_unparseable, resamples)
        self.client = client
        self.prompt = prompt
        self.chat = chat if chat is not None else getattr(client.engine, "api", "chat") == "chat"
        self.sampling = sampling or JudgeSampling()
        self.on_unparseable: Unparseable = on_unparseable
        self.resamples = resamples
        self.name = name

    async def ask(self, query: str, read: Callable[[JudgeReply], T | None]) -> T | None:
        """The verdict on one query under this judge's prompt and policy (see `ask_for_verdict`)."""
        question = self.prompt.render(query, chat=self.chat)
        return await ask_for_verdict(
            self.client,
            question,
            self.sampling,
            read,
            on_unparseable=self.on_unparseable,
            resamples=self.resamples,
        )

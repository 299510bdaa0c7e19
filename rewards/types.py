"""The data every reward speaks: chat messages, the sample being scored, and its score.

Messages use the OpenAI chat format as plain dicts, because that is what crosses every
boundary here: HTTP to judges and reward servers, gymnasium observations, JSONL logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Required, TypedDict

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, exactly as the model produced it


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict, total=False):
    """One chat message in OpenAI format."""

    role: Required[str]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


def message(role: Role, content: str) -> Message:
    """A plain text message."""
    return {"role": role, "content": content}


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user message ("" when there is none): the instruction a reply answers.

    OpenAI content parts (`[{"type": "text", "text": ...}]`) count by their text parts."""
    for turn in reversed(messages):
        if turn.get("role") == "user":
            content = turn.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return ""
    return ""


@dataclass(frozen=True)
class Sample:
    """What a reward sees: one finished (or in-progress) conversation and the task's key.

    `completion` is the text under judgement, usually the last assistant reply; the whole
    transcript is in `messages` for rewards that need context (judges, multi-turn rules).
    """

    messages: tuple[Message, ...]
    completion: str
    reference: Any = None  # gold answer, tests, label: whatever the task carries
    task_id: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)  # task metadata
    num_tokens: int | None = None  # completion length in tokens, when the policy reports it

    @classmethod
    def from_completion(
        cls, completion: str, reference: Any = None, *, prompt: str = "", **fields: Any
    ) -> Sample:
        """A single-turn sample from prompt and completion text (handy in scripts and tests)."""
        messages: list[Message] = []
        if prompt:
            messages.append(message("user", prompt))
        messages.append(message("assistant", completion))
        return cls(messages=tuple(messages), completion=completion, reference=reference, **fields)


@dataclass(frozen=True)
class Score:
    """A reward's verdict on one sample.

    `value` is the scalar the learner uses. `components` are named numbers behind it (parts
    of a weighted sum, or diagnostics). `passed` says whether the sample counts as solved,
    or None where a pass makes no sense (a length penalty). When the reward could not be
    computed, `error` says why and `value` is NaN, so an error can never pass for a 0.
    """

    value: float
    components: Mapping[str, float] = field(default_factory=dict)
    passed: bool | None = None
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)  # e.g. the extracted answer

    @classmethod
    def failure(cls, error: str, **info: Any) -> Score:
        """A score for a sample the reward could not judge."""
        return cls(value=math.nan, error=error, info=info)

    @property
    def ok(self) -> bool:
        return self.error is None


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan

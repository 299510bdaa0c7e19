"""Gymnasium spaces for chat: an observation is a conversation, an action is a reply.

They exist so that `gymnasium.utils.env_checker.check_env` can check our environments
(membership, seeding, sampling) like any other; `sample()` gives random but well-formed
messages, which is also what a random-policy smoke test wants.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Space

from rewards.types import ROLES, Message

_SAMPLE_CHARS = np.array(list(string.ascii_letters + string.digits + " .,?!+-*/=\\{}"))


def is_message(value: Any, roles: Sequence[str] = ROLES) -> bool:
    """True for a well-formed OpenAI-style chat message dict."""
    if not isinstance(value, dict) or value.get("role") not in roles:
        return False
    content = value.get("content")
    tool_calls = value.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list) or not all(_is_tool_call(c) for c in tool_calls):
            return False
        return content is None or isinstance(content, str)
    return isinstance(content, str)


def _is_tool_call(call: Any) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return False
    function = call["function"]
    return isinstance(function.get("name"), str) and isinstance(function.get("arguments"), str)


def _random_text(rng: np.random.Generator, max_chars: int) -> str:
    length = int(rng.integers(1, max(2, max_chars + 1)))
    return "".join(rng.choice(_SAMPLE_CHARS, size=length))


class ConversationSpace(Space[list[Message]]):
    """Lists of chat messages (the observation: the conversation so far)."""

    def __init__(self, max_messages: int | None = None, seed: int | None = None) -> None:
        self.max_messages = max_messages
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list):
            return False
        if self.max_messages is not None and len(x) > self.max_messages:
            return False
        return all(is_message(m) for m in x)

    def sample(self, mask: Any = None, probability: Any = None) -> list[Message]:
        """A random system + user (+ assistant) exchange."""
        roles = ["system", "user", "assistant"][: int(self.np_random.integers(1, 4))]
        return [{"role": role, "content": _random_text(self.np_random, 40)} for role in roles]

    def __repr__(self) -> str:
        return f"ConversationSpace(max_messages={self.max_messages})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConversationSpace) and other.max_messages == self.max_messages


class ReplySpace(Space[str | Message]):
    """Assistant replies (the action): text, or an assistant message (possibly with tool calls)."""

    def __init__(self, max_chars: int = 64, seed: int | None = None) -> None:
        self.max_chars = max_chars  # only bounds `sample()`; replies of any length are valid
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) or is_message(x, roles=("assistant",))

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return _random_text(self.np_random, self.max_chars)

    def __repr__(self) -> str:
        return "ReplySpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplySpace)

"""Turning a conversation into prompt text for models without a chat template.

Base models (like the embedded Gemma 3 270M) have no chat template, so we render a plain
transcript they can continue, and stop generation where the next user turn would begin.
"""

from __future__ import annotations

from collections.abc import Sequence

from rewards.types import Message

PLAIN_STOP = ("\nUser:",)
_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "tool": "Tool"}


def render_plain(messages: Sequence[Message]) -> str:
    """System text, then `User: ...` / `Assistant: ...` turns, ending with `Assistant:`."""
    parts: list[str] = []
    for message in messages:
        content = (message.get("content") or "").strip()
        role = message["role"]
        if role == "system":
            parts.append(f"{content}\n\n")
        elif role == "assistant":
            parts.append(f"Assistant: {content}\n\n")
        else:
            parts.append(f"{_ROLE_NAMES.get(role, role.title())}: {content}\n")
    return "".join(parts) + "Assistant:"

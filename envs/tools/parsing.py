"""Finding the tool calls in an assistant reply, in the formats models actually write.

- `native`: the OpenAI `tool_calls` field of the message (an API server parsed them);
- `json`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the text
  (Hermes / Qwen / many open chat templates);
- `tags`: `<python>code</python>`, `<search>query</search>`: the tag names a tool and its
  body is the tool's one text argument (the Search-R1 / ToRL / ARPO style).

A closing tag may be missing at the very end of the reply (generation stopped on it, or
ran out of tokens there); the call still counts. A call that cannot be read (broken JSON,
no tool name) comes back as a `ToolCall` with `error` set, so the environment can tell the
model what was wrong instead of dropping it silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rewards.types import Message

ToolCallFormat = Literal["native", "json", "tags"]
TOOL_CALL_FORMATS: tuple[ToolCallFormat, ...] = ("native", "json", "tags")
_JSON_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"\A\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for. `arguments` is None when the call could not be read."""

    id: str
    name: str
    arguments: Mapping[str, Any] | None = field(default=None, hash=False)
    error: str | None = None  # why the call could not be read
    start: int = 0  # where it begins in the reply's text (orders calls of mixed formats)


@dataclass(frozen=True)
class TagTool:
    """`<tag>body</tag>` calls tool `tool` with `{argument: body}`."""

    tool: str
    argument: str


class ToolCallParser:
    """Reads the tool calls of a reply in the given formats, in order of appearance."""

    def __init__(
        self,
        formats: Sequence[ToolCallFormat] = TOOL_CALL_FORMATS,
        tags: Mapping[str, TagTool] | None = None,
    ) -> None:
        unknown = [f for f in formats if f not in TOOL_CALL_FORMATS]
        if unknown:
            raise ValueError(f"unknown tool-call format(s) {unknown}; use {list(TOOL_CALL_FORMATS)}")
        self.formats = tuple(formats)
        self.tags = dict(tags or {}) if "tags" in self.formats else {}
        for tag in self.tags:
            if not re.fullmatch(r"[A-Za-z_][\w-]*", tag):
                raise ValueError(f"tag {tag!r} is not a valid tag name")
        self._tag_patterns = {
            tag: re.compile(rf"<{re.escape(tag)}>(.*?)(?:</{re.escape(tag)}>|\Z)", re.DOTALL)
            for tag in self.tags
        }

    @property
    def closing_tags(self) -> tuple[str, ...]:
        """Strings that end a call in the text: generation can stop right after them."""
        closing = ["</tool_call>"] if "json" in self.formats else []
        return (*closing, *(f"</{tag}>" for tag in self.tags))

    def parse(self, reply: Message, *, call_prefix: str = "call") -> list[ToolCall]:
        """The calls in `reply`; ids for text calls are `{call_prefix}_{n}`."""
        calls: list[ToolCall] = []
        if "native" in self.formats:
            calls += [
                _native_call(raw, f"{call_prefix}_{i}") for i, raw in enumerate(reply.get("tool_calls") or [])
            ]
        text = reply.get("content") or ""
        found: list[tuple[int, str, Mapping[str, Any] | None, str | None]] = []
        if "json" in self.formats:
            found += [
                (m.start(), *_json_call(_without_partial_close(m, "</tool_call>")))
                for m in _JSON_CALL.finditer(text)
            ]
        for tag, pattern in self._tag_patterns.items():
            target = self.tags[tag]
            for match in pattern.finditer(text):
                body = _unfence(_without_partial_close(match, f"</{tag}>"))
                if body.strip():
                    found.append((match.start(), target.tool, {target.argument: body}, None))
                else:
                    found.append((match.start(), target.tool, None, f"<{tag}> has an empty body"))
        found.sort(key=lambda item: item[0])
        base = len(calls)
        calls += [
            ToolCall(f"{call_prefix}_{base + i}", name, arguments, error, start)
            for i, (start, name, arguments, error) in enumerate(found)
        ]
        return calls


def _native_call(raw: Any, default_id: str) -> ToolCall:
    function = raw.get("function") if isinstance(raw, Mapping) else None
    call_id = str(raw.get("id") or default_id) if isinstance(raw, Mapping) else default_id
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return ToolCall(call_id, "", None, "a tool call needs function.name")
    arguments, error = _arguments(function.get("arguments"))
    return ToolCall(call_id, function["name"], arguments, error)


def _json_call(body: str) -> tuple[str, Mapping[str, Any] | None, str | None]:
    """(name, arguments, error) from the JSON inside `<tool_call>...</tool_call>`."""
    body = _unfence(body).strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return "", None, f"the tool call is not valid JSON ({exc.msg} at character {exc.pos}): {body[:120]!r}"
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return "", None, 'a tool call must be a JSON object {"name": ..., "arguments": {...}}'
    raw_arguments = value.get("arguments", value.get("parameters", {}))
    arguments, error = _arguments(raw_arguments)
    return value["name"], arguments, error


def _arguments(raw: Any) -> tuple[Mapping[str, Any] | None, str | None]:
    """Arguments as a dict: given as an object or as JSON text of one (the OpenAI wire form)."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(raw, dict):
        return None, f"the arguments must be a JSON object, got {type(raw).__name__}"
    return raw, None


def _without_partial_close(match: re.Match[str], closing: str) -> str:
    """The call's body; when the reply ended inside the closing tag (out of tokens), without
    that tag's beginning."""
    body = match.group(1)
    if match.group(0).endswith(closing):
        return body
    for cut in range(min(len(closing) - 1, len(body)), 1, -1):
        if body.endswith(closing[:cut]):
            return body[:-cut]
    return body


def _unfence(body: str) -> str:
    """The code inside a ``` fence, when the whole body is one fenced block."""
    match = _FENCE.match(body)
    return match.group(1) if match else body.strip("\n")

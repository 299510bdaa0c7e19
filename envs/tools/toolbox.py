"""`Toolbox`: the tools of an environment by name, and running one parsed call among them.

It owns the answers to calls that never reach a tool (unreadable, unknown name) so that
every call, good or bad, yields exactly one `ToolResult` and one tool message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from envs.tools.parsing import TagTool, ToolCall
from envs.tools.tool import Tool, ToolResult, ToolState, as_tool


class Toolbox:
    """Named tools; `run` turns any `ToolCall` into a `ToolResult`."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]]) -> None:
        self.tools: dict[str, Tool] = {}
        for item in tools:
            tool = as_tool(item)
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self.tools[tool.name] = tool
        if not self.tools:
            raise ValueError("a toolbox needs at least one tool")

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI `tools` list."""
        return [tool.schema for tool in self.tools.values()]

    def tag_tools(self) -> dict[str, TagTool]:
        """`<name>body</name>` for every tool whose only required argument is one string."""
        tags = {}
        for tool in self.tools.values():
            properties = tool.parameters.get("properties", {})
            if len(tool.required) == 1 and properties[tool.required[0]].get("type") == "string":
                tags[tool.name] = TagTool(tool.name, tool.required[0])
        return tags

    def new_states(self) -> dict[str, ToolState]:
        """Fresh per-episode state for every tool."""
        return {name: ToolState() for name in self.tools}

    async def run(self, call: ToolCall, states: dict[str, ToolState]) -> ToolResult:
        if call.error is not None or call.arguments is None:
            return ToolResult(f"Error: could not read the tool call: {call.error}", "malformed")
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolResult(
                f"Error: there is no tool named {call.name!r}; the tools are: {', '.join(self.tools)}",
                "unknown_tool",
            )
        return await tool(call.arguments, states.setdefault(call.name, ToolState()))

    def describe(self, tags: dict[str, TagTool] | None = None) -> str:
        """The tools for a prompt: JSON schemas, plus the tag shorthand where it applies."""
        lines = []
        for tool in self.tools.values():
            lines.append(json.dumps(tool.schema["function"], ensure_ascii=False))
            if tags and tool.name in tags:
                lines.append(f"  shorthand: <{tool.name}>{tags[tool.name].argument}</{tool.name}>")
        return "\n".join(lines)

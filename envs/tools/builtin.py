"""The built-in tools by name, so configs and the CLI can say `tools = ["python", "search"]`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from envs.tools.calculator import calculator_tool
from envs.tools.python_tool import python_tool
from envs.tools.search import search_tool
from envs.tools.tool import Tool, as_tool
from sandbox import Sandbox

BUILTIN_TOOLS = ("python", "calculator", "search")


def builtin_tool(
    name: str,
    *,
    sandbox: Sandbox | None = None,
    python_stateful: bool = True,
    corpus: str = "islands",
    timeout_s: float | None = None,
    max_output_chars: int | None = None,
) -> Tool:
    """`python` (sandboxed; stateful across one episode's calls), `calculator`, or `search`
    (BM25 over `corpus`). `timeout_s` and `max_output_chars`: None keeps each tool's own
    default."""
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options["timeout_s"] = timeout_s
    if max_output_chars is not None:
        options["max_output_chars"] = max_output_chars
    if name == "python":
        return python_tool(sandbox, stateful=python_stateful, **options)
    if name == "calculator":
        return calculator_tool(**options)
    if name == "search":
        return search_tool(corpus, **options)
    raise ValueError(f"unknown built-in tool {name!r}; the built-in tools are {', '.join(BUILTIN_TOOLS)}")


def resolve_tools(
    tools: Sequence[str | Tool | Callable[..., Any]],
    *,
    sandbox: Sandbox | None = None,
    python_stateful: bool = True,
    corpus: str = "islands",
    timeout_s: float | None = None,
    max_output_chars: int | None = None,
) -> list[Tool]:
    """Tools from names of built-ins, `Tool`s and plain functions, in order. `timeout_s` and
    `max_output_chars` set the built-ins' limits (a `Tool` you pass keeps its own)."""
    if isinstance(tools, str):
        raise TypeError(f"tools must be a list, e.g. [{tools!r}], not a string")
    return [
        builtin_tool(
            item,
            sandbox=sandbox,
            python_stateful=python_stateful,
            corpus=corpus,
            timeout_s=timeout_s,
            max_output_chars=max_output_chars,
        )
        if isinstance(item, str)
        else as_tool(item)
        for item in tools
    ]

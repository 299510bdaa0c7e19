"""`Tool`: a typed Python callable the model may call, described by its OpenAI function schema.

A tool is written once, as an ordinary function (sync or async). Its JSON schema comes
from the signature (types through pydantic) and the docstring (the summary and each
parameter's description; Google, NumPy and reST styles through docstring_parser):

    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first addend
            b: the second addend
        '''
        return a + b

    add_tool = Tool(add)          # or decorate the function with @tool

A call never raises into the environment for anything the model's call caused: arguments
that do not fit the schema, an exception inside the tool (`SystemExit` and a
`CancelledError` of the tool's own included), a call running past `timeout_s` and output
over `max_output_chars` all come back as a `ToolResult` whose `content` is what the model
reads and whose `error` says what went wrong. Two things do propagate: `KeyboardInterrupt`
and the cancellation of the caller's own task (the run is being stopped), and
`ToolInfrastructureError`, which a tool raises when the machinery under it failed (the
sandbox broke): that says nothing about the model's call, so the episode fails as an
environment error instead of training the model on it.

Sync tools run on daemon threads of their own (`ToolThreads`: a hung call cannot starve
other tools or keep the process from exiting; the time limit starts when a thread picks
the call up). A parameter annotated `ToolState` is not part of the schema: it receives a
dict private to this tool and this episode (a stateful tool keeps its session there).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

import docstring_parser
import pydantic

from envs.tools.threads import ToolStuck, ToolThreads

ToolErrorKind = Literal["malformed", "unknown_tool", "bad_arguments", "raised", "timeout", "budget"]
TOOL_ERROR_KINDS: tuple[ToolErrorKind, ...] = (
    "malformed",  # the call could not be read (broken JSON, no name)
    "unknown_tool",  # no tool has that name
    "bad_arguments",  # the arguments do not fit the tool's schema
    "raised",  # the tool raised an exception
    "timeout",  # the tool ran past its time limit
    "budget",  # the episode's tool-call budget was used up
)
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_OUTPUT_CHARS = 4000
DEFAULT_THREADS = 4  # worker threads of a sync tool (see `ToolThreads`)


class ToolState(dict[str, Any]):
    """Scratch space of one tool for one episode (inject it by annotating a parameter)."""


class ToolError(Exception):
    """Raise inside a tool to send the model this message (no exception type in front)."""


class ToolTimeoutError(ToolError):
    """Raise inside a tool when the work it runs (a sandbox, a server) hit its own time limit."""


class ToolInfrastructureError(RuntimeError):
    """Raise inside a tool when what it runs on failed (sandbox, service), not the call itself.

    It is not a tool message: it escapes the call, so the episode ends with an environment
    error and is not trained on (like a failing test harness in a code reward)."""


class ToolDefinitionError(TypeError):
    """The function cannot be described as a tool (e.g. `*args`, an unsupported type)."""


@dataclass(frozen=True)
class ToolResult:
    """What a call gave back: `content` for the model, `error` for metrics and policies."""

    content: str
    error: ToolErrorKind | None = None
    truncated: bool = False  # output was cut to `max_output_chars`
    seconds: float = 0.0


class Tool:
    """A callable with a name, a description and an argument schema the model can read.

    `threads`: how many worker threads a sync tool may use (its own, see `ToolThreads`)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_output_chars < 64:
            raise ValueError(f"max_output_chars must be at least 64, got {max_output_chars}")
        self.fn = fn
        self.name = name or fn.__name__
        if not self.name.isidentifier():
            raise ToolDefinitionError(f"tool name {self.name!r} must be an identifier (letters, digits, _)")
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
        )
        doc = docstring_parser.parse(inspect.getdoc(fn) or "")
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = description or summary or self.name
        self._arguments_model, self._state_parameter = _arguments_model(fn, self.name, doc)
        self.parameters: dict[str, Any] = _clean_schema(self._arguments_model.model_json_schema())
        self.threads = ToolThreads(self.name, threads)  # used by sync tools only

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function-calling entry for this tool (the `tools` list item)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @property
    def required(self) -> list[str]:
        return list(self.parameters.get("required", []))

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments checked and converted to the signature's types; ValueError names each problem."""
        if not isinstance(arguments, Mapping):
            raise ValueError(f"arguments must be a JSON object, got {type(arguments).__name__}")
        try:
            model = self._arguments_model.model_validate(dict(arguments))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(problems) from None
        return {field: getattr(model, field) for field in type(model).model_fields}

    async def __call__(self, arguments: Mapping[str, Any], state: ToolState | None = None) -> ToolResult:
        """Run the tool; every failure becomes a `ToolResult` with an error kind."""
        start = time.monotonic()

        def result(content: str, error: ToolErrorKind | None = None) -> ToolResult:
            return ToolResult(content, error, seconds=time.monotonic() - start)

        try:
            kwargs = self.validate(arguments)
        except ValueError as exc:
            return result(f"Error: bad arguments for {self.name}: {exc}", "bad_arguments")
        if self._state_parameter:
            kwargs[self._state_parameter] = state if state is not None else ToolState()
        try:
            if self.is_async:  # in this task, so that whatever the tool raises comes straight here
                async with asyncio.timeout(self.timeout_s):
                    output = await self.fn(**kwargs)
            else:
                output = await self.threads.run(functools.partial(self.fn, **kwargs), self.timeout_s)
        except TimeoutError:
            return result(f"Error: {self.name} timed out after {self.timeout_s:g} s", "timeout")
        except ToolStuck as exc:
            return result(f"Error: {exc}", "timeout")
        except ToolInfrastructureError:
            raise
        except ToolTimeoutError as exc:
            return result(f"Error: {exc}", "timeout")
        except ToolError as exc:
            return result(f"Error: {exc}", "raised")
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            return result(f"Error: {_describe(exc)}", "raised")
        except (Exception, SystemExit) as exc:  # a tool calling sys.exit() must not end the run
            return result(f"Error: {_describe(exc)}", "raised")
        text, truncated = truncate_output(render_output(output), self.max_output_chars)
        return ToolResult(text, None, truncated, time.monotonic() - start)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, parameters={list(self.parameters.get('properties', {}))})"


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    threads: int = DEFAULT_THREADS,
) -> Any:
    """Decorator: `@tool` or `@tool(timeout_s=2)` turns a function into a `Tool`."""

    def wrap(function: Callable[..., Any]) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            timeout_s=timeout_s,
            max_output_chars=max_output_chars,
            threads=threads,
        )

    return wrap(fn) if fn is not None else wrap


def as_tool(value: Tool | Callable[..., Any] | Callable[..., Awaitable[Any]]) -> Tool:
    """A `Tool` as is; a plain function wrapped with the defaults."""
    return value if isinstance(value, Tool) else Tool(value)


def _being_cancelled() -> bool:
    """Whether the current task was asked to stop (then a CancelledError is not the tool's)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _describe(exc: BaseException) -> str:
    """`KeyError: 'x'`, or only the type's name when the exception has no message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def render_output(output: Any) -> str:
    """A tool's return value as text for the model."""
    if output is None:
        return "(no output)"
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(output)


def truncate_output(text: str, max_chars: int) -> tuple[str, bool]:
    """Head and tail of text over `max_chars`, with a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text, False
    marker = "\n[... {} characters cut ...]\n"
    keep = max_chars - len(marker.format(len(text)))
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    return text[:head] + marker.format(len(text) - head - tail) + text[len(text) - tail :], True


def _arguments_model(
    fn: Callable[..., Any], name: str, doc: docstring_parser.Docstring
) -> tuple[type[pydantic.BaseModel], str | None]:
    """A pydantic model of the call's arguments, and the name of the `ToolState` parameter."""
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise ToolDefinitionError(f"tool {name!r}: cannot resolve its type hints: {exc}") from None
    descriptions = {p.arg_name: p.description for p in doc.params}
    fields: dict[str, Any] = {}
    state_parameter = None
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        hint = hints.get(parameter.name, Any)
        if hint is ToolState:
            state_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hint, pydantic.Field(default, description=descriptions.get(parameter.name)))
    try:
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(f"tool {name!r}: its parameters have no JSON schema: {exc}") from None
    return model, state_parameter


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema without the titles it adds (they only repeat the names)."""
    schema = {k: v for k, v in schema.items() if k != "title"}
    schema["properties"] = {
        key: {k: v for k, v in prop.items() if k != "title"}
        for key, prop in schema.get("properties", {}).items()
    }
    schema.pop("additionalProperties", None)
    schema["additionalProperties"] = False
    return schema

"""Tools as typed callables (schemas from signatures and docstrings, every failure a tool
message) and the parser that finds tool calls in replies. Real functions, no mocks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import pytest

from envs.tools import (
    TagTool,
    Tool,
    Toolbox,
    ToolCall,
    ToolCallParser,
    ToolDefinitionError,
    ToolError,
    ToolResult,
    ToolState,
    calculator_tool,
    tool,
)

REPO = Path(__file__).resolve().parent.parent


def add(a: int, b: int = 2, unit: Literal["m", "km"] = "m") -> str:
    """Add two distances.

    Args:
        a: the first distance
        b: the second distance
        unit: the unit of both
    """
    return f"{a + b} {unit}"


async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


def blocking(seconds: float) -> str:
    """Block the thread, then answer."""
    time.sleep(seconds)
    return "done"


def broken(x: int) -> int:
    """Always fails."""
    raise KeyError(f"no entry {x}")


class Opaque:
    """A type with no JSON schema."""


def run(coro):
    return asyncio.run(coro)


def test_schema_comes_from_signature_and_docstring() -> None:
    schema = Tool(add).schema
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "add" and function["description"] == "Add two distances."
    parameters = function["parameters"]
    assert parameters["required"] == ["a"]
    assert parameters["properties"]["a"] == {"type": "integer", "description": "the first distance"}
    assert parameters["properties"]["b"]["default"] == 2
    assert parameters["properties"]["unit"]["enum"] == ["m", "km"]
    assert parameters["additionalProperties"] is False


def test_tool_state_parameter_is_injected_not_described() -> None:
    async def counter(step: int, state: ToolState) -> int:
        """Count up by `step`, remembering the total."""
        state["total"] = state.get("total", 0) + step
        return state["total"]

    counting = Tool(counter)
    assert list(counting.parameters["properties"]) == ["step"]
    state = ToolState()
    assert run(counting({"step": 2}, state)).content == "2"
    assert run(counting({"step": 3}, state)).content == "5"
    assert run(counting({"step": 3}, ToolState())).content == "3"  # another episode starts afresh


def test_decorator_with_and_without_options() -> None:
    @tool
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    @tool(name="say", timeout_s=1.0)
    async def speak(text: str) -> str:
        """Say it."""
        return text

    assert isinstance(shout, Tool) and shout.name == "shout" and not shout.is_async
    assert speak.name == "say" and speak.is_async and speak.timeout_s == 1.0
    assert run(shout({"text": "hi"})).content == "HI"


def test_arguments_are_converted_or_refused_with_the_reason() -> None:
    adder = Tool(add)
    assert run(adder({"a": "3"})).content == "5 m"  # JSON text for a number is accepted
    wrong_type = run(adder({"a": "three"}))
    assert wrong_type.error == "bad_arguments" and "a: Input should be a valid integer" in wrong_type.content
    missing = run(adder({}))
    assert missing.error == "bad_arguments" and "a: Field required" in missing.content
    extra = run(adder({"a": 1, "c": 2}))
    assert extra.error == "bad_arguments" and "c: Extra inputs are not permitted" in extra.content
    bad_enum = run(adder({"a": 1, "unit": "miles"}))
    assert bad_enum.error == "bad_arguments" and "unit" in bad_enum.content
    not_object = run(adder(["a"]))  # type: ignore[arg-type]
    assert not_object.error == "bad_arguments" and "JSON object" in not_object.content


def test_exceptions_become_error_messages() -> None:
    result = run(Tool(broken)({"x": 7}))
    assert result.error == "raised"
    assert result.content == "Error: KeyError: 'no entry 7'"

    def polite(x: int) -> int:
        """Refuses nicely."""
        raise ToolError(f"{x} is out of range")

    assert run(Tool(polite)({"x": 9})) == ToolResult(
        "Error: 9 is out of range", "raised", seconds=pytest.approx(0, abs=1)
    )

    def exits(code: int) -> int:
        """Calls sys.exit, as a careless script would."""
        sys.exit(code)

    async def exits_async(code: int) -> int:
        """The same, async."""
        sys.exit(code)

    def cancels(code: int) -> int:
        """Raises CancelledError although nobody cancelled it."""
        raise asyncio.CancelledError(f"gave up on {code}")

    async def cancels_async(code: int) -> int:
        """The same, async (e.g. it awaited a future someone else cancelled)."""
        raise asyncio.CancelledError()

    for fn, message in [
        (exits, "Error: SystemExit: 3"),
        (exits_async, "Error: SystemExit: 3"),
        (cancels, "Error: CancelledError: gave up on 3"),
        (cancels_async, "Error: CancelledError"),
    ]:
        result = run(Tool(fn)({"code": 3}))
        assert (result.content, result.error) == (message, "raised"), fn.__name__


def test_cancelling_the_caller_still_cancels_a_tool_call() -> None:
    """A CancelledError that comes from stopping the episode is not turned into a tool message."""

    async def caller() -> None:
        call = asyncio.ensure_future(Tool(slow)({"seconds": 5}))
        await asyncio.sleep(0.05)
        call.cancel()
        await call

    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        run(caller())
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("fn", [slow, blocking], ids=["async", "sync-thread"])
def test_a_hanging_tool_times_out(fn) -> None:
    hanging = Tool(fn, timeout_s=0.3)
    start = time.monotonic()
    result = run(hanging({"seconds": 3 if fn is slow else 1.0}))
    assert result.error == "timeout" and "timed out after 0.3 s" in result.content
    assert time.monotonic() - start < (2.5 if fn is slow else 1.6)  # the caller was not held
    assert run(Tool(fn, timeout_s=2)({"seconds": 0.01})).content == "done"


def test_hung_sync_calls_do_not_starve_other_tools_or_queue_forever() -> None:
    """Eight calls that never end: another tool still answers at once, and once the hung
    tool's own threads are all stuck, its next call is refused without waiting."""
    release = threading.Event()

    def hang(n: int) -> str:
        """Wait for an event that does not come."""
        release.wait()
        return "released"

    hung = Tool(hang, timeout_s=0.2, threads=4)
    calculator = calculator_tool(timeout_s=1.0)

    async def go() -> tuple[list[ToolResult], ToolResult, ToolResult]:
        stuck = await asyncio.gather(*(hung({"n": i}) for i in range(8)))
        answer = await calculator({"expression": "6 * 7"})
        start = time.monotonic()
        refused = await hung({"n": 9})
        assert time.monotonic() - start < 0.1  # answered at once, not after another timeout
        return stuck, answer, refused

    try:
        stuck, answer, refused = run(go())
        assert [r.error for r in stuck] == ["timeout"] * 8
        assert answer.error is None and answer.content == "42"
        assert refused.error == "timeout" and "hang is stuck: all 4 of its threads" in refused.content
        assert hung.threads.stuck == 4
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while hung.threads.stuck and time.monotonic() < deadline:  # released calls free their threads
        time.sleep(0.01)
    assert hung.threads.stuck == 0 and run(hung({"n": 10})).content == "released"


def test_the_time_limit_starts_when_a_thread_takes_the_call() -> None:
    """One thread, three calls of 0.3 s each and a 0.5 s limit: the later calls wait for the
    thread, then run; none is timed out for the waiting."""
    single = Tool(blocking, timeout_s=0.5, threads=1)

    async def go() -> list[ToolResult]:
        return list(await asyncio.gather(*(single({"seconds": 0.3}) for _ in range(3))))

    start = time.monotonic()
    assert [r.content for r in run(go())] == ["done"] * 3
    assert time.monotonic() - start >= 0.85  # they did run one after another


STUCK_FOREVER = """
import asyncio, threading
from envs.tools import Tool

def forever(n: int) -> str:
    threading.Event().wait()

result = asyncio.run(Tool(forever, timeout_s=0.2)({"n": 1}))
print(result.error)
"""


def test_a_process_with_a_tool_stuck_forever_still_exits() -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK_FOREVER], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timeout"
    assert time.monotonic() - start < 30  # it exits; it does not wait for the stuck thread


def test_huge_output_is_cut_with_a_marker() -> None:
    def flood(n: int) -> str:
        """Print a lot."""
        return "".join(f"{i:07d}\n" for i in range(n))

    result = run(Tool(flood, max_output_chars=1000)({"n": 100_000}))
    assert result.truncated and result.error is None
    assert len(result.content) <= 1000
    assert result.content.startswith("0000000\n") and result.content.endswith("0099999\n")
    assert "characters cut" in result.content


def test_return_values_are_rendered_as_text() -> None:
    def structured(n: int) -> dict[str, list[int]]:
        """Return a structure."""
        return {"squares": [i * i for i in range(n)]}

    def nothing(n: int) -> None:
        """Return nothing."""

    assert run(Tool(structured)({"n": 3})).content == '{"squares": [0, 1, 4]}'
    assert run(Tool(nothing)({"n": 3})).content == "(no output)"


def test_functions_that_cannot_be_tools_are_refused_at_definition() -> None:
    def variadic(*args: int) -> int:
        """Sum."""
        return sum(args)

    def opaque(x: Opaque) -> str:
        """Takes an object no schema describes."""
        return str(x)

    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        Tool(variadic)
    with pytest.raises(ToolDefinitionError, match="no JSON schema"):
        Tool(opaque)
    with pytest.raises(ToolDefinitionError, match="identifier"):
        Tool(add, name="add numbers")


def test_toolbox_answers_unknown_and_unreadable_calls() -> None:
    box = Toolbox([add, Tool(slow)])
    states = box.new_states()
    assert box.names == ["add", "slow"] and len(box.schemas) == 2
    unknown = run(box.run(ToolCall("c0", "subtract", {"a": 1}), states))
    assert unknown.error == "unknown_tool" and "there is no tool named 'subtract'" in unknown.content
    assert "add, slow" in unknown.content
    unreadable = run(box.run(ToolCall("c1", "", None, "broken JSON"), states))
    assert unreadable.error == "malformed" and "broken JSON" in unreadable.content
    assert run(box.run(ToolCall("c2", "add", {"a": 1, "b": 1}), states)).content == "2 m"
    with pytest.raises(ValueError, match="two tools"):
        Toolbox([add, add])


def test_tag_shorthand_only_for_one_string_argument() -> None:
    def search(query: str) -> str:
        """Search."""
        return query

    box = Toolbox([add, search])
    assert box.tag_tools() == {"search": TagTool("search", "query")}


# -- parsing ---------------------------------------------------------------------------------

PARSER = ToolCallParser(tags={"python": TagTool("python", "code"), "search": TagTool("search", "query")})


def test_parses_json_tool_calls_in_text() -> None:
    text = 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    (call,) = PARSER.parse({"role": "assistant", "content": text}, call_prefix="t1")
    assert call == ToolCall("t1_0", "add", {"a": 1, "b": 2}, None, start=call.start)
    string_arguments = '<tool_call>{"name": "add", "arguments": "{\\"a\\": 4}"}</tool_call>'
    assert PARSER.parse({"role": "assistant", "content": string_arguments})[0].arguments == {"a": 4}


def test_parses_tags_with_fenced_code_and_an_unclosed_final_tag() -> None:
    text = "<python>\n```python\nprint(1)\n```\n</python> then <search>capital of Oru"
    first, second = PARSER.parse({"role": "assistant", "content": text})
    assert (first.name, first.arguments) == ("python", {"code": "print(1)"})
    assert (second.name, second.arguments) == ("search", {"query": "capital of Oru"})
    out_of_tokens = PARSER.parse({"role": "assistant", "content": "<python>print(6*7)</pyth"})
    assert out_of_tokens[0].arguments == {"code": "print(6*7)"}  # the half-written closing tag is dropped
    json_cut = PARSER.parse(
        {"role": "assistant", "content": '<tool_call>{"name": "add", "arguments": {}}</tool'}
    )
    assert (json_cut[0].name, json_cut[0].arguments) == ("add", {})


def test_calls_of_mixed_formats_keep_their_order() -> None:
    text = (
        '<search>a</search> <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call> <python>2</python>'
    )
    calls = PARSER.parse({"role": "assistant", "content": text})
    assert [c.name for c in calls] == ["search", "add", "python"]
    assert [c.id for c in calls] == ["call_0", "call_1", "call_2"]


def test_native_tool_calls_keep_their_ids() -> None:
    reply = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "abc", "type": "function", "function": {"name": "add", "arguments": '{"a": 5}'}},
            {"id": "def", "type": "function", "function": {"name": "add", "arguments": "{oops"}},
        ],
    }
    good, bad = PARSER.parse(reply)
    assert (good.id, good.name, good.arguments) == ("abc", "add", {"a": 5})
    assert bad.id == "def" and bad.arguments is None and "not valid JSON" in (bad.error or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', "must be a JSON object"),
        ('<tool_call>["add"]</tool_call>', "must be a JSON object"),
        ('<tool_call>{"name": "add", "arguments": [1]}</tool_call>', "arguments must be a JSON object"),
        ("<python>   </python>", "empty body"),
    ],
)
def test_malformed_calls_are_reported_not_dropped(text: str, message: str) -> None:
    (call,) = PARSER.parse({"role": "assistant", "content": text})
    assert call.arguments is None and message in (call.error or "")


def test_plain_replies_have_no_calls_and_formats_can_be_limited() -> None:
    assert PARSER.parse({"role": "assistant", "content": "The answer is \\boxed{4}."}) == []
    json_only = ToolCallParser(formats=("json",), tags={"python": TagTool("python", "code")})
    assert json_only.parse({"role": "assistant", "content": "<python>1</python>"}) == []
    assert json_only.closing_tags == ("</tool_call>",)
    assert PARSER.closing_tags == ("</tool_call>", "</python>", "</search>")
    with pytest.raises(ValueError, match="unknown tool-call format"):
        ToolCallParser(formats=("xml",))  # type: ignore[arg-type]

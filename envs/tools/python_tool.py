"""The python tool: the model's code runs in the sandbox, and it reads what the code printed.

Every call is one fresh sandbox run (isolation per call, nothing lives on between runs).
`stateful=True` gives the feel of a notebook anyway: the cells of this episode that ran
without error are replayed silently before the new one, so variables, functions and
imports carry over. Replay re-executes code, so it costs the earlier cells' time again
and anything random or time-dependent in them is drawn afresh. As in a notebook, a cell
ending in an expression shows that expression's value.

A failure of the sandbox itself (status sandbox-error, or the sandbox raising) says nothing
about the model's code: it raises `ToolInfrastructureError`, so the episode fails as an
environment error rather than teaching the model that its code was wrong.
"""

from __future__ import annotations

import json

from envs.tools.tool import (
    DEFAULT_MAX_OUTPUT_CHARS,
    Tool,
    ToolError,
    ToolInfrastructureError,
    ToolState,
    ToolTimeoutError,
)
from sandbox import Limits, RunRequest, RunStatus, Sandbox, default_sandbox

CELLS_FILE = "cells.json"
STATELESS_DESCRIPTION = (
    "Run Python code and return what it prints (stdout and stderr); a final expression's value is shown."
)
STATEFUL_DESCRIPTION = (
    f"{STATELESS_DESCRIPTION} Variables, functions and imports from earlier successful calls are kept."
)
# Runs inside the sandbox: replays the history quietly, then runs the new cell.
DRIVER = r"""
import ast, contextlib, io, json, linecache, sys, traceback

def run_cell(source, namespace, show_last):
    linecache.cache["<cell>"] = (len(source), None, source.splitlines(True), "<cell>")
    tree = ast.parse(source, "<cell>", "exec")
    last = None
    if show_last and tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), namespace)
        if value is not None:
            print(repr(value))

with open("cells.json") as handle:
    cells = json.load(handle)
namespace = {"__name__": "__main__"}
for old in cells["history"]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            run_cell(old, namespace, False)
        except BaseException:
            pass
try:
    run_cell(cells["cell"], namespace, True)
except SyntaxError as exc:
    sys.stdout.flush()
    sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
    sys.exit(1)
except BaseException as exc:
    sys.stdout.flush()
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
        tb = tb.tb_next
    sys.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))
    sys.exit(1)
"""


def python_tool(
    sandbox: Sandbox | None = None,
    *,
    stateful: bool = True,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> Tool:
    """A `python` tool running code in `sandbox` (default: the shared bubblewrap sandbox)."""
    # Output up to 1 MiB comes back and is cut to `max_output_chars` for the model (head and
    # tail); a program printing more than that is stopped.
    limits = Limits(
        wall_time_s=timeout_s, memory_mb=memory_mb, max_output_bytes=max(1 << 20, 4 * max_output_chars)
    )

    async def python(code: str, state: ToolState) -> str:
        """Run Python code and return what it prints (stdout and stderr); a final expression's value is shown.

        Args:
            code: the Python source to run
        """
        history: list[str] = state.get("cells", []) if stateful else []
        payload = json.dumps({"history": history, "cell": code}).encode()
        try:
            result = await (sandbox or default_sandbox()).run(
                RunRequest(code=DRIVER, files={CELLS_FILE: payload}, limits=limits)
            )
        except Exception as exc:
            raise ToolInfrastructureError(f"the sandbox failed: {type(exc).__name__}: {exc}") from exc
        output = result.stdout + result.stderr
        if result.status is RunStatus.OK:
            if stateful:
                state["cells"] = [*history, code]
            return output or "(no output)"
        if result.status is RunStatus.ERROR:
            raise ToolError(output.strip() or f"the code exited with status {result.exit_code}")
        if result.status is RunStatus.TIMEOUT:
            raise ToolTimeoutError(f"the code ran past the time limit of {timeout_s:g} s" + _partial(output))
        if result.status is RunStatus.MEMORY:
            raise ToolError(f"the code ran out of memory (limit {memory_mb} MiB)" + _partial(output))
        if result.status is RunStatus.OUTPUT_LIMIT:
            raise ToolError("the code printed too much output and was stopped" + _partial(output))
        raise ToolInfrastructureError(f"the sandbox failed: {result.message}")

    description = STATEFUL_DESCRIPTION if stateful else STATELESS_DESCRIPTION
    # The sandbox enforces the wall limit; the tool's own timeout is a backstop above it.
    return Tool(python, description=description, timeout_s=timeout_s + 5.0, max_output_chars=max_output_chars)


def _partial(output: str, chars: int = 500) -> str:
    output = output.strip()
    if not output:
        return ""
    return "; output before that:\n" + (output if len(output) <= chars else output[:chars] + "...")

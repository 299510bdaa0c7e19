"""Code tests: run a program against its tests in the sandbox, and score it by how many pass.

Two kinds of test: `AssertTest` (Python run in the solution's namespace, e.g.
`assert add(1, 2) == 3`, or HumanEval's `check` function called on the entry point) and
`IOTest` (stdin in, expected stdout out, compared up to line endings and trailing
whitespace). A `CodeTestSuite` holds a task's tests.

One sandbox run per solution: the harness ships a driver program (`code_test_driver`) that
runs each test in a process of its own with its own timeout, so one test's infinite loop or
crash costs only that test, and reports per-test verdicts on a channel the solution cannot
write to. A failed test is a 0 for that test; a sandbox that failed is an error on the item
(`HarnessError`, which the reward turns into a NaN score with the error set).
"""

from __future__ import annotations

import json
import marshal
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from rewards.base import Reward
from rewards.code_test_driver import zygote_source
from rewards.extract import extract_code
from rewards.types import Sample, Score
from sandbox import Limits, RunRequest, RunResult, RunStatus, Sandbox, default_sandbox
from sandbox.languages import get_language

SPEC_FILE = "tests.json"
DRIVER_FILE, DRIVER_CODE_FILE = "driver.py", "driver.code"
DRIVER_MARGIN_S = 1.0  # per test: starting the interpreter, killing leftovers
STARTUP_S = 3.0


@dataclass(frozen=True)
class AssertTest:
    """Python run after the solution, in its namespace; it passes if it raises nothing."""

    code: str
    name: str = ""


@dataclass(frozen=True)
class IOTest:
    """The solution run as a program with `input` on stdin; it passes if it exits 0 and
    prints `output` (line endings and trailing whitespace do not matter)."""

    input: str
    output: str
    name: str = ""


CodeTest = AssertTest | IOTest


@dataclass(frozen=True)
class CodeTestSuite:
    """A task's tests, in the language the solution must be written in.

    `prelude` is Python run before the solution in the same namespace (HumanEval: the
    prompt, for its imports and helper functions). With an `entry_point` and a prelude that
    declares it, a reply that does not define that function is taken as the body of the
    prelude's function (a completion). C and C++ solutions can have stdin/stdout tests only.
    """

    tests: tuple[CodeTest, ...]
    language: str = "python"
    prelude: str = ""
    entry_point: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", tuple(self.tests))
        if not self.tests:
            raise ValueError("a code test suite needs at least one test")
        language = get_language(self.language).name
        object.__setattr__(self, "language", language)
        if language not in ("python", "c", "cpp"):
            raise ValueError(f"code tests support python, c and cpp solutions, not {language!r}")
        if language != "python" and not all(isinstance(t, IOTest) for t in self.tests):
            raise ValueError(f"{language} solutions can only have stdin/stdout tests")
        if language != "python" and self.prelude:
            raise ValueError(f"a prelude is Python; it cannot go with a {language} solution")

    @property
    def kind(self) -> str:
        """'function' (complete the function the prelude declares), 'stdio' (a whole program)
        or 'asserts' (code that the tests call)."""
        if self.entry_point and _defines(self.prelude, self.entry_point):
            return "function"
        return "stdio" if all(isinstance(t, IOTest) for t in self.tests) else "asserts"

    def test_names(self) -> list[str]:
        return [t.name or f"test {i + 1}" for i, t in enumerate(self.tests)]

    def solution_source(self, code: str) -> tuple[str, str]:
        """(prelude, solution) to run for this reply."""
        if self.kind == "function" and not _defines(code, self.entry_point):
            return "", self.prelude + code  # the body of the prelude's function
        return self.prelude, code

    @classmethod
    def from_json(cls, value: Any) -> CodeTestSuite:
        """A suite from the JSON task schema: a mapping with `tests` (a list of
        {"input", "output"} or {"assert"} objects), `asserts` (a list of Python snippets)
        and/or `check` (or HumanEval's `test`) with `entry_point`; optional `language`
        and `prelude`. A bare list is taken as `tests`; a suite passes through."""
        if isinstance(value, CodeTestSuite):
            return value
        if isinstance(value, list | tuple):
            value = {"tests": value}
        if not isinstance(value, Mapping):
            raise ValueError(f"code tests must be a mapping or a list, got {type(value).__name__}")
        tests: list[CodeTest] = []
        for i, item in enumerate(value.get("tests") or ()):
            if not isinstance(item, Mapping):
                raise ValueError(f"tests[{i}] must be an object, got {type(item).__name__}")
            name = str(item.get("name") or "")
            if "assert" in item:
                tests.append(AssertTest(code=_text(item["assert"], f"tests[{i}].assert"), name=name))
            elif "input" in item and "output" in item:
                tests.append(
                    IOTest(
                        input=_text(item["input"], f"tests[{i}].input"),
                        output=_text(item["output"], f"tests[{i}].output"),
                        name=name,
                    )
                )
            else:
                raise ValueError(f'tests[{i}] needs "input" and "output", or "assert"; it has {sorted(item)}')
        for i, snippet in enumerate(value.get("asserts") or ()):
            tests.append(AssertTest(code=_text(snippet, f"asserts[{i}]")))
        check = value.get("check", value.get("test"))
        entry_point = value.get("entry_point")
        if check is not None:
            if not entry_point:
                raise ValueError('"check" code needs the "entry_point" it checks')
            code = f"{_text(check, 'check')}\n\ncheck({entry_point})\n"
            tests.append(AssertTest(code=code, name="check"))
        if not tests:
            raise ValueError('no tests: give "tests", "asserts", or "check" with "entry_point"')
        return cls(
            tests=tuple(tests),
            language=str(value.get("language") or "python"),
            prelude=_text(value.get("prelude") or "", "prelude"),
            entry_point=str(entry_point) if entry_point else None,
        )


def _defines(code: str, function: str | None) -> bool:
    pattern = rf"^\s*(async\s+)?def\s+{re.escape(function or '')}\s*\("
    return function is not None and re.search(pattern, code, re.M) is not None


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be text, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CodeTestResult:
    """One test's verdict; `reason` says why it failed ('' when it passed)."""

    name: str
    passed: bool
    reason: str = ""
    time_s: float | None = None  # None: the test never ran

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class CodeTestReport:
    """Every test's verdict for one solution."""

    results: tuple[CodeTestResult, ...]
    wall_time_s: float = 0.0
    stopped: str | None = None  # why the run ended before every test had run, if it did

    @property
    def num_passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def pass_fraction(self) -> float:
        return self.num_passed / len(self.results)

    @property
    def all_passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[CodeTestResult]:
        return [r for r in self.results if not r.passed]


class HarnessError(RuntimeError):
    """The tests could not be run (the sandbox failed, or the driver did): says nothing
    about the solution."""


@cache
def driver_source() -> str:
    return resources.files("rewards").joinpath("code_test_driver.py").read_text(encoding="utf-8")


@cache
def driver_code() -> bytes:
    """The driver and its zygote compiled here, once, for a sandbox Python of this version
    (`DRIVER_LOADER` compiles `driver_source` itself under any other): saves every run two
    compiles."""
    source = driver_source()
    codes = {
        "driver": compile(source, DRIVER_FILE, "exec"),
        "zygote": marshal.dumps(compile(zygote_source(source), "zygote.py", "exec")),
    }
    return "{}.{}\n".format(*sys.version_info[:2]).encode() + marshal.dumps(codes)


# The program the sandbox runs: the driver, precompiled where versions match. It passes the
# driver its own source and the zygote's code, and removes both files before any test runs.
DRIVER_LOADER = f"""
import marshal, os, sys
with open({DRIVER_FILE!r}, encoding="utf-8") as f:
    source = f.read()
with open({DRIVER_CODE_FILE!r}, "rb") as f:
    version, _, code = f.read().partition(b"\\n")
os.unlink({DRIVER_FILE!r})
os.unlink({DRIVER_CODE_FILE!r})
codes = {{"driver": None, "zygote": None}}
if version.decode() == "%d.%d" % sys.version_info[:2]:
    codes = marshal.loads(code)
driver = codes["driver"] or compile(source, {DRIVER_FILE!r}, "exec")
exec(driver, {{"__name__": "__main__", "__builtins__": __builtins__, "DRIVER_SOURCE": source,
              "ZYGOTE_CODE": codes["zygote"]}})
"""


@dataclass(frozen=True)
class CodeTestHarness:
    """Runs solutions against test suites in a sandbox, one sandbox run per solution.

    `timeout_s` and `memory_mb` hold for each test; the run as a whole gets the sum of the
    timeouts plus a margin. `max_output_bytes` caps a test's stdout. `sandbox` defaults to
    the shared bubblewrap sandbox, created on first use.
    """

    sandbox: Sandbox | None = field(default=None, compare=False)
    timeout_s: float = 6.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20
    compile_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and self.memory_mb > 0 and self.max_output_bytes > 0):
            raise ValueError("timeout_s, memory_mb and max_output_bytes must be positive")

    async def run(self, code: str, suite: CodeTestSuite) -> CodeTestReport:
        """Run `code` against every test of `suite`. Raises HarnessError if the sandbox fails."""
        sandbox = self.sandbox or default_sandbox()
        result = await sandbox.run(self.request(code, suite))
        return self.read_report(result, suite)

    def request(self, code: str, suite: CodeTestSuite) -> RunRequest:
        """The sandbox run: the driver as the program, the tests (and a C/C++ source) as files."""
        language = get_language(suite.language)
        prelude, solution = suite.solution_source(code) if language.name == "python" else ("", code)
        compiles = language.compile_argv is not None
        spec = {
            "solution": solution,
            "prelude": prelude,
            "compile": list(language.compile_argv) if compiles else None,
            "run": list(language.run_argv) if language.run_argv else None,
            "tests": [_test_json(t) for t in suite.tests],
            "limits": {
                "timeout_s": self.timeout_s,
                "memory_mb": self.memory_mb,
                "max_output_bytes": self.max_output_bytes,
                "compile_timeout_s": self.compile_timeout_s,
            },
        }
        files = {
            SPEC_FILE: json.dumps(spec).encode(),
            DRIVER_FILE: driver_source().encode(),
            DRIVER_CODE_FILE: driver_code(),
        }
        if compiles:
            files[language.source_file] = code.encode()
        wall = STARTUP_S + len(suite.tests) * (self.timeout_s + DRIVER_MARGIN_S)
        if compiles:
            wall += self.compile_timeout_s
        limits = Limits(
            wall_time_s=wall,
            memory_mb=max(self.memory_mb, 2048) if compiles else self.memory_mb,
            max_output_bytes=1 << 20,
        )
        return RunRequest(code=DRIVER_LOADER, language="python", files=files, limits=limits)

    def read_report(self, result: RunResult, suite: CodeTestSuite) -> CodeTestReport:
        """Per-test verdicts from the driver's events; tests it never finished fail with the
        reason the run stopped."""
        names = suite.test_names()
        if result.status is RunStatus.SANDBOX_ERROR:
            raise HarnessError(f"sandbox error: {result.message}")
        try:
            events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise HarnessError(f"the test driver wrote malformed output: {result.stdout[:200]!r}") from None
        if not events or events[0].get("event") != "start":
            raise HarnessError(f"the test driver did not start ({_describe_run(result)})")
        results: dict[int, CodeTestResult] = {}
        running: int | None = None
        for event in events:
            kind = event.get("event")
            if kind == "compiled" and not event["ok"]:
                return CodeTestReport(
                    tuple(CodeTestResult(name, False, event["reason"]) for name in names),
                    result.wall_time_s,
                    stopped=event["reason"],
                )
            if kind == "begin":
                running = event["index"]
            elif kind == "result":
                index = event["index"]
                results[index] = CodeTestResult(
                    names[index], event["passed"], event["reason"], event["time_s"]
                )
                running = None
            elif kind == "done":
                if len(results) != len(names):
                    raise HarnessError(
                        f"the test driver finished with {len(results)} of {len(names)} results"
                    )
                return CodeTestReport(tuple(results[i] for i in range(len(names))), result.wall_time_s)
        stopped = self._why_stopped(result, running)
        for index, name in enumerate(names):
            if index == running:
                results[index] = CodeTestResult(name, False, stopped)
            elif index not in results:
                results[index] = CodeTestResult(name, False, f"not run: {stopped}")
        return CodeTestReport(tuple(results[i] for i in range(len(names))), result.wall_time_s, stopped)

    def _why_stopped(self, result: RunResult, running: int | None) -> str:
        """The run ended early. Only a test can stop the driver (by taking the run's time,
        memory or processes, or by killing the driver); a driver that failed on its own is
        our bug, an error."""
        if result.status is RunStatus.TIMEOUT:
            return f"timeout: the whole run passed its time limit ({result.message})"
        if result.status is RunStatus.MEMORY:
            return f"out of memory: {result.message}"
        if result.status is RunStatus.ERROR and result.signal is not None:
            return f"the test killed the test driver (signal {result.signal})"
        if result.status is RunStatus.OK and running is not None:
            return "the test stopped the test driver"
        raise HarnessError(f"the test driver failed ({_describe_run(result)})")


def _describe_run(result: RunResult) -> str:
    stderr = result.stderr.strip().splitlines()
    detail = f"; stderr: {stderr[-1][:300]}" if stderr else ""
    return f"status {result.status.value}, {result.message or 'no message'}{detail}"


def _test_json(test: CodeTest) -> dict[str, str]:
    if isinstance(test, AssertTest):
        return {"kind": "assert", "code": test.code}
    return {"kind": "io", "input": test.input, "output": test.output}


class CodeTestsReward(Reward):
    """Runs the reply's code against the task's tests in the sandbox.

    The code is the last ```python (or plain ```) block of the reply, else the whole reply.
    The tests are `Sample.reference` (a `CodeTestSuite`, or its JSON form) or, failing
    that, the task's own fields in `Sample.info` (`tests`, `asserts`, `check`...).
    Components: `pass_fraction` and `all_pass`; value = all_pass_weight * all_pass +
    pass_fraction_weight * pass_fraction (default: all tests must pass); `passed` when
    every test passes. `info["tests"]` has each test's verdict and reason.
    """

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        timeout_s: float = 6.0,
        memory_mb: int = 512,
        all_pass_weight: float = 1.0,
        pass_fraction_weight: float = 0.0,
        name: str = "code_tests",
    ) -> None:
        if not (math.isfinite(all_pass_weight) and math.isfinite(pass_fraction_weight)):
            raise ValueError("the weights must be finite")
        self.harness = CodeTestHarness(sandbox=sandbox, timeout_s=timeout_s, memory_mb=memory_mb)
        self.all_pass_weight = all_pass_weight
        self.pass_fraction_weight = pass_fraction_weight
        self.name = name

    async def compute(self, sample: Sample) -> Score:
        source = sample.reference if sample.reference is not None else sample.info
        suite = CodeTestSuite.from_json(source)
        code = extract_code(sample.completion, suite.language)
        report = await self.harness.run(code, suite)
        all_pass = float(report.all_passed)
        return Score(
            value=self.all_pass_weight * all_pass + self.pass_fraction_weight * report.pass_fraction,
            components={"pass_fraction": report.pass_fraction, "all_pass": all_pass},
            passed=report.all_passed,
            info={
                "tests": [r.to_json() for r in report.results],
                "passed_tests": report.num_passed,
                "num_tests": len(report.results),
                "language": suite.language,
            },
        )

"""The code test harness and reward, run in the real bubblewrap sandbox: verdicts, reasons,
hacks that must not pass, and sandbox failures that must be errors, not zeros."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Iterator
from dataclasses import replace

import pytest

from envs import humaneval_tasks
from rewards import (
    AssertTest,
    CodeTestHarness,
    CodeTestReport,
    CodeTestsReward,
    CodeTestSuite,
    HarnessError,
    IOTest,
    Sample,
    extract_code,
    make_reward,
)
from rewards.code_test_driver import normalize_output
from sandbox import RunResult, RunStatus, Sandbox, default_sandbox, make_sandbox
from sandbox.bubblewrap import BubblewrapSandbox

ADD_TESTS = CodeTestSuite(
    tests=(
        AssertTest("assert add(1, 2) == 3"),
        AssertTest("assert add(2, 2) == 5", name="wrong on purpose"),
        AssertTest("assert add(-1, 1) == 0"),
        AssertTest("assert add(0, 0) == 0"),
    )
)
ADD = "def add(a, b):\n    return a + b\n"
SUM_TESTS = CodeTestSuite(tests=(IOTest("1 2\n", "3\n"), IOTest("5 5\n", "10\n"), IOTest("-1 1\n", "0\n")))
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
FORGE_THROUGH_PROC = """
import json, os
driver = open('/proc/self/stat').read().split()[3]
with open(f'/proc/{driver}/fd/1', 'w') as out:
    for i in range(4):
        event = {"event": "result", "index": i, "passed": True, "reason": "", "time_s": 0}
        out.write(json.dumps(event) + "\\n")
    out.write('{"event": "done"}\\n')
os._exit(0)
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with make_sandbox("bubblewrap") as box:
        yield box


@pytest.fixture(scope="module")
def harness(sandbox: Sandbox) -> CodeTestHarness:
    return CodeTestHarness(sandbox=sandbox, timeout_s=1.0)


def run(harness: CodeTestHarness, code: str, suite: CodeTestSuite) -> CodeTestReport:
    return asyncio.run(harness.run(code, suite))


def reasons(report: CodeTestReport) -> list[str]:
    return [r.reason for r in report.results]


def test_each_assert_test_passes_or_fails_on_its_own_with_a_reason(harness: CodeTestHarness) -> None:
    report = run(harness, ADD, ADD_TESTS)
    assert [r.passed for r in report.results] == [True, False, True, True]
    assert report.results[1].name == "wrong on purpose"
    assert reasons(report)[1] == "AssertionError (test line 1: assert add(2, 2) == 5)"
    assert (report.num_passed, report.pass_fraction, report.all_passed) == (3, 0.75, False)

    hangs_on_negatives = "def add(a, b):\n    while a < 0:\n        pass\n    return a + b\n"
    report = run(harness, hangs_on_negatives, ADD_TESTS)
    assert [r.passed for r in report.results] == [True, False, False, True]  # the hang costs one test
    assert reasons(report)[2] == "timeout: no result within 1s"

    divides = "def add(a, b):\n    return (a + b) // a\n"
    report = run(harness, divides, ADD_TESTS)
    assert reasons(report)[
        3
    ] == "ZeroDivisionError: integer division or modulo by zero (solution line 2: " + ("return (a + b) // a)")
    assert run(harness, "def add(a b):\n    pass\n", ADD_TESTS).results[0].reason == (
        "SyntaxError: invalid syntax (solution line 1: def add(a b):)"
    )


def test_exiting_early_or_printing_a_verdict_never_passes(harness: CodeTestHarness) -> None:
    hacks = {
        "import os\nos._exit(0)\n": "the process exited with status 0 before the test finished",
        "import sys\nsys.exit(0)\n": "SystemExit(0): the solution exited before the test finished",
        ADD.replace("a + b", "0") + "raise SystemExit\n": "SystemExit(None)",
        'print(\'{"ok": true}\')\nprint(\'{"event": "result", "index": 1, "passed": true}\')\n'
        "import sys\nsys.stdout.flush()\nimport os\nos._exit(0)\n": "the process exited with status 0",
        "import os\nos.write(4, b'{\"ok\": true}')\nos._exit(0)\n": "a forged verdict?",
        "import os\nos.close(4)\n" + ADD: "Bad file descriptor",
        FORGE_THROUGH_PROC: "PermissionError",
    }
    for code, reason in hacks.items():
        report = run(harness, code, ADD_TESTS)
        assert report.num_passed == 0, code
        assert all(reason in r for r in reasons(report)), (code, reasons(report))


def test_tests_cannot_read_the_expected_outputs(harness: CodeTestHarness) -> None:
    snoop = "import gc, os\nprint(os.listdir('.'), [o for o in gc.get_objects() if o == '10\\n'])\n"
    report = run(harness, snoop, SUM_TESTS)
    assert report.num_passed == 0
    assert "got \"['main.py'] []\"" in reasons(report)[1]


ESCAPED_DAEMON = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            with open('/tmp/beat', 'a') as f:
                f.write('x')
            time.sleep(0.005)
    os._exit(0)
time.sleep(0.2)
"""
DAEMON_GONE = (
    "import os, time\nsize = os.path.getsize('/tmp/beat')\ntime.sleep(0.2)\n"
    "assert os.path.getsize('/tmp/beat') == size, 'the daemon lives'"
)
LEAVE_STATE = "import builtins, math, sys\nbuiltins.LEFT = 1\nmath.pi = 3\nsys.modules['json'] = None"
NO_STATE = (
    "import builtins, math, sys\n"
    "assert not hasattr(builtins, 'LEFT') and math.pi > 3.14 and sys.modules.get('json', 1) is not None"
)
SIGNAL_OTHERS = """
import os, signal
for pid in range(3, 64):
    if pid != os.getpid():
        try:
            os.kill(pid, signal.{})
        except OSError:
            pass
"""


def test_each_test_starts_fresh_whatever_the_one_before_did(harness: CodeTestHarness) -> None:
    """Tests are forks of one zygote: interpreter state, escaped daemons, and a zygote that a
    test stopped or killed must not reach the next test."""
    suite = CodeTestSuite(
        tests=tuple(
            AssertTest(code)
            for code in (
                LEAVE_STATE, NO_STATE, ESCAPED_DAEMON, DAEMON_GONE, SIGNAL_OTHERS.format("SIGSTOP"), NO_STATE,
                SIGNAL_OTHERS.format("SIGKILL"), NO_STATE,
            )
        )
    )  # fmt: skip
    report = run(harness, "", suite)
    assert [r.passed for r in report.results] == [True] * 8, reasons(report)


def test_a_sandbox_python_of_another_version_compiles_the_driver_itself(harness: CodeTestHarness) -> None:
    """The driver ships precompiled for this Python; under any other version the loader
    compiles the shipped source (and the zygote's part of it) instead."""
    request = harness.request(ADD, ADD_TESTS)
    files = {**request.files, "driver.code": b"2.7\n" + request.files["driver.code"].split(b"\n", 1)[1]}
    result = harness.sandbox.run_sync(replace(request, files=files))  # type: ignore[union-attr]
    report = harness.read_report(result, ADD_TESTS)
    assert [r.passed for r in report.results] == [True, False, True, True], reasons(report)


def test_the_default_harness_runs_on_the_shared_warm_sandbox() -> None:
    """No sandbox given: the harness uses the default one, which is bubblewrap and warm, and
    successive solutions go through the same warm supervisor."""
    harness = CodeTestHarness(timeout_s=2.0)
    assert run(harness, ADD, ADD_TESTS).num_passed == 3
    shared = default_sandbox()
    assert isinstance(shared, BubblewrapSandbox) and shared.warm
    supervisor = shared._pool.idle()[-1]  # the one just used: the next run takes it again
    pid, runs = supervisor.process.pid, supervisor.runs
    assert run(harness, ADD, ADD_TESTS).num_passed == 3
    again = shared._pool.idle()[-1]
    assert (again.process.pid, again.runs) == (pid, runs + 1)


def test_a_test_that_kills_the_driver_fails_itself_and_the_rest(harness: CodeTestHarness) -> None:
    report = run(harness, ADD + "import os\nos.kill(os.getppid(), 9)\n", ADD_TESTS)
    assert report.num_passed == 0 and report.stopped == "the test killed the test driver (signal 9)"
    assert reasons(report)[1:] == ["not run: the test killed the test driver (signal 9)"] * 3


def test_stdin_stdout_tests_compare_up_to_line_endings_and_trailing_space(harness: CodeTestHarness) -> None:
    sloppy = "a, b = map(int, input().split())\nprint(a + b, end='   \\r\\n\\n\\n')\n"
    assert run(harness, sloppy, SUM_TESTS).all_passed
    assert run(harness, SUM, SUM_TESTS).all_passed
    report = run(harness, "a, b = map(int, input().split())\nprint(' ', a + b)\n", SUM_TESTS)
    assert reasons(report)[0] == "wrong output: line 1: expected '3', got '  3'"  # leading space counts
    report = run(harness, SUM + "print('extra')\n", SUM_TESTS)
    assert reasons(report)[0] == "wrong output: line 2: expected no more output, got 'extra'"
    report = run(harness, "print(int('x'))", SUM_TESTS)
    assert reasons(report)[0] == (
        "runtime error: exited with status 1: ValueError: invalid literal for int() with base 10: 'x'"
    )
    report = run(harness, "while True:\n    print('y' * 100000)\n", SUM_TESTS)
    assert reasons(report)[0] == "output limit: more than 1048576 bytes on stdout"

    assert normalize_output("a  \r\nb\t\r\n\r\n\n") == normalize_output("a\nb") == "a\nb"
    assert normalize_output(" a") != normalize_output("a")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler")
def test_c_solutions_for_stdin_stdout_tests(harness: CodeTestHarness) -> None:
    suite = CodeTestSuite(tests=SUM_TESTS.tests, language="c")
    program = (
        '#include <stdio.h>\nint main(void) { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b); }\n'
    )
    assert run(harness, program, suite).all_passed
    report = run(harness, "int main(void) { return oops; }", suite)
    assert report.num_passed == 0 and "compilation failed: main.c:1:" in report.stopped
    with pytest.raises(ValueError, match="c solutions can only have stdin/stdout tests"):
        CodeTestSuite(tests=ADD_TESTS.tests, language="c")


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(harness: CodeTestHarness) -> None:
    tasks = humaneval_tasks()
    assert len(tasks) == 164
    sample = [tasks.find(f"HumanEval/{i}") for i in (0, 32, 38, 53, 163)]  # 32 and 38 use prompt helpers

    async def run_all(codes: list[str]) -> list[CodeTestReport]:
        return await asyncio.gather(*(harness.run(c, t.answer) for c, t in zip(codes, sample, strict=True)))

    full = asyncio.run(run_all([t.info["solution"] for t in sample]))
    assert all(r.all_passed for r in full)
    body_only = asyncio.run(run_all([t.info["solution"][len(str(t.prompt)) :] for t in sample]))
    assert all(r.all_passed for r in body_only)  # a completion of the prompt's function
    wrong = asyncio.run(run_all([f"def {t.answer.entry_point}(*args):\n    return None\n" for t in sample]))
    assert not any(r.all_passed for r in wrong)
    assert wrong[0].results[0].reason.startswith("AssertionError (test line")


def test_reward_components_weights_and_registry(sandbox: Sandbox) -> None:
    strict = CodeTestsReward(sandbox=sandbox, timeout_s=1.0)
    score = asyncio.run(strict.score(Sample.from_completion(f"Here:\n```python\n{ADD}```", ADD_TESTS)))
    assert (score.value, score.passed, score.error) == (0.0, False, None)
    assert score.components == {"pass_fraction": 0.75, "all_pass": 0.0}
    assert score.info["tests"][1] == {
        "name": "wrong on purpose",
        "passed": False,
        "reason": "AssertionError (test line 1: assert add(2, 2) == 5)",
    }
    graded = make_reward("code_tests", sandbox=sandbox, all_pass_weight=0.5, pass_fraction_weight=1.0)
    as_json = {"tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4"}]}
    score = asyncio.run(graded.score(Sample.from_completion(SUM, as_json)))
    assert (score.value, score.passed) == (1.5, True)
    from_info = Sample.from_completion(SUM, None, info={"tests": as_json["tests"][:1]})
    assert asyncio.run(graded.score(from_info)).passed is True
    untestable = asyncio.run(graded.score(Sample.from_completion(SUM, {"tests": []})))
    assert math.isnan(untestable.value) and "no tests" in untestable.error


def test_a_failed_sandbox_is_an_error_on_the_item_not_a_zero(harness: CodeTestHarness) -> None:
    closed = make_sandbox("bubblewrap")
    closed.close()
    score = asyncio.run(CodeTestsReward(sandbox=closed).score(Sample.from_completion(ADD, ADD_TESTS)))
    assert math.isnan(score.value) and score.passed is None
    assert score.error == "code_tests: HarnessError: sandbox error: the sandbox is closed"

    crashed_driver = RunResult(
        status=RunStatus.ERROR, exit_code=1, stdout="", stderr="Traceback...\nKeyError: 'x'"
    )
    with pytest.raises(HarnessError, match=r"the test driver did not start .*KeyError: 'x'"):
        harness.read_report(crashed_driver, ADD_TESTS)
    started = '{"event": "start"}\n{"event": "begin", "index": 0}\n'
    timed_out = RunResult(status=RunStatus.TIMEOUT, stdout=started, message="wall-clock limit of 9s reached")
    report = harness.read_report(timed_out, ADD_TESTS)
    assert (
        reasons(report)[0] == "timeout: the whole run passed its time limit (wall-clock limit of 9s reached)"
    )
    assert reasons(report)[1].startswith("not run: timeout")


def test_code_is_taken_from_the_last_python_block() -> None:
    reply = "First try:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```\nOutput:\n```\n2\n```"
    assert extract_code(reply) == "x = 2\n"
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("print(1)") == "print(1)"
    assert extract_code("Cut off:\n```python\ndef f():\n    return") == "def f():\n    return"
    assert extract_code("```cpp\nint main() {}\n```\n```python\nx\n```", "cpp") == "int main() {}\n"


def test_suites_from_the_json_schema() -> None:
    suite = CodeTestSuite.from_json(
        {
            "tests": [{"input": "1\n", "output": "1\n"}, {"assert": "assert f(1) == 1", "name": "one"}],
            "asserts": ["assert f(2) == 2"],
            "check": "def check(candidate):\n    assert candidate(3) == 3\n",
            "entry_point": "f",
        }
    )
    assert [type(t).__name__ for t in suite.tests] == ["IOTest", "AssertTest", "AssertTest", "AssertTest"]
    assert suite.test_names() == ["test 1", "one", "test 3", "check"] and suite.kind == "asserts"
    completion = CodeTestSuite(suite.tests, prelude='def f(x):\n    """x"""\n', entry_point="f")
    assert completion.kind == "function"
    assert completion.solution_source("    return x\n") == ("", 'def f(x):\n    """x"""\n    return x\n')
    assert completion.solution_source("def f(x): return x") == (completion.prelude, "def f(x): return x")
    assert CodeTestSuite.from_json([{"input": "", "output": ""}]).kind == "stdio"
    for bad, message in [
        ({"tests": [{"input": "1"}]}, 'needs "input" and "output", or "assert"'),
        ({"check": "def check(c): pass"}, 'needs the "entry_point"'),
        ({}, "no tests"),
        ({"asserts": ["x"], "language": "cobol"}, "unknown language 'cobol'"),
    ]:
        with pytest.raises(ValueError, match=message):
            CodeTestSuite.from_json(bad)

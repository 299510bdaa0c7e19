"""The code environment in the real sandbox: the bundled set's own solutions, the retry flow,
HumanEval, user task files, gymnasium's checker and registration."""

from __future__ import annotations

import asyncio
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import CodeEnv, Task, TaskFileError, TaskList, bundled_tasks, resolve_code_tasks
from rewards import CodeTestHarness, CodeTestSuite, IOTest
from sandbox import Sandbox, make_sandbox

RIGHT = "Read both, add them.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
WRONG = "```python\na, b = map(int, input().split())\nprint(a - b)\n```"
SUM_TASK = Task(
    id="sum",
    prompt="Read two integers and print their sum.",
    answer=CodeTestSuite(tests=(IOTest("1 2\n", "3\n"), IOTest("2 2\n", "4\n"), IOTest("0 5\n", "5\n"))),
)
TASKS = TaskList([SUM_TASK], name="tiny-code")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with make_sandbox("bubblewrap") as box:
        yield box


def test_every_bundled_problem_passes_with_its_reference_solution(sandbox: Sandbox) -> None:
    tasks = resolve_code_tasks("bundled:code_basic")
    assert len(tasks) == 30
    assert all(3 <= len(t.answer.tests) <= 5 and t.answer.kind == "stdio" for t in tasks)
    harness = CodeTestHarness(sandbox=sandbox)

    async def run_all() -> list:
        return await asyncio.gather(*(harness.run(t.info["solution"], t.answer) for t in tasks))

    failures = {
        t.id: r.failures() for t, r in zip(tasks, asyncio.run(run_all()), strict=True) if not r.all_passed
    }
    assert failures == {}


def test_a_wrong_program_gets_feedback_and_a_fixed_one_ends_the_episode(sandbox: Sandbox) -> None:
    env = CodeEnv(TASKS, sandbox=sandbox)
    obs, _ = env.reset(options={"task_id": "sum"})
    assert [m["role"] for m in obs] == ["system", "user"] and "```python" in obs[1]["content"]
    obs, reward, terminated, truncated, info = env.step(WRONG)
    assert (reward, terminated, truncated, info["passed"]) == (0.0, False, False, False)
    assert info["reward_components"] == {"pass_fraction": 0.0, "all_pass": 0.0}
    assert obs[-1]["role"] == "user" and obs[-1]["content"] == "\n".join(
        [
            "Your code failed 3 of 3 tests:",
            "- test 1: wrong output: line 1: expected '3', got '-1'",
            "- test 2: wrong output: line 1: expected '4', got '0'",
            "- test 3: wrong output: line 1: expected '5', got '-5'",
            "Fix the code and give the complete corrected program in a ```python code block.",
        ]
    )
    _, reward, terminated, truncated, info = env.step(RIGHT)
    assert (reward, terminated, truncated, info["passed"]) == (1.0, True, False, True)
    assert info["metrics"] | {"num_tokens": 0} == {
        "turns": 2,
        "attempts": 2,
        "tests_passed": 3,
        "tests_total": 3,
        "reward_errors": 0,
        "num_tokens": 0,
    }


def test_the_final_attempt_is_what_counts(sandbox: Sandbox) -> None:
    env = CodeEnv(TASKS, sandbox=sandbox, max_attempts=2, pass_fraction_weight=1.0, all_pass_weight=0.0)
    env.reset(options={"task_id": "sum"})
    half_right = "```python\na, b = map(int, input().split())\nprint(a + b if a else 0)\n```"
    assert env.step(half_right)[1:3] == (0.0, False)  # 2 of 3 tests, but the episode goes on
    _, reward, terminated, _, info = env.step(WRONG)
    assert (reward, terminated, info["metrics"]["tests_passed"]) == (0.0, True, 0)


def test_a_sandbox_failure_ends_the_episode_with_an_error_not_feedback() -> None:
    closed = make_sandbox("bubblewrap")
    closed.close()
    env = CodeEnv(TASKS, sandbox=closed)
    env.reset()
    _, reward, terminated, _, info = env.step(RIGHT)
    assert math.isnan(reward) and terminated and info["metrics"]["reward_errors"] == 1
    assert "sandbox is closed" in info["reward_error"] and "tests_passed" not in info["metrics"]


def test_humaneval_env_scores_the_canonical_solution(sandbox: Sandbox) -> None:
    env = envs.make("rewardgym/HumanEval-v0", sandbox=sandbox)
    assert len(env.tasks) == 164 and env.max_attempts == 1
    obs, _ = env.reset(options={"task_id": "HumanEval/2"})
    task = env.episode.task
    assert f"```python\n{task.prompt}```" in obs[-1]["content"]
    _, reward, terminated, _, _ = env.step(f"```python\n{task.info['solution']}```")
    assert (reward, terminated) == (1.0, True)
    env.reset(options={"task_id": "HumanEval/2"})
    _, reward, terminated, _, info = env.step("```python\ndef truncate_number(number):\n    return 0.0\n```")
    assert (reward, terminated, info["passed"]) == (0.0, True, False)


def test_user_task_files_in_the_documented_schema(tmp_path: Path, sandbox: Sandbox) -> None:
    rows = [
        {"id": "double", "prompt": "Write double(x).", "asserts": ["assert double(2) == 4"], "solution": "x"},
        {
            "id": "triple",
            "prompt": "def triple(x):\n    '''Three times x.'''\n",
            "check": "def check(candidate):\n    assert candidate(2) == 6\n",
            "entry_point": "triple",
        },
        {"prompt": "Echo the input.", "tests": [{"input": "hi\n", "output": "hi\n"}]},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = CodeEnv(f"jsonl:{path}", sandbox=sandbox, max_attempts=1)
    assert [t.answer.kind for t in env.tasks] == ["asserts", "function", "stdio"]
    assert env.tasks[2].id == "mine-3" and env.tasks[0].info["solution"] == "x"
    replies = ["def double(x):\n    return 2 * x\n", "```python\n    return 3 * x\n```", "print(input())"]
    for index, reply in enumerate(replies):
        env.reset(options={"task_index": index})
        assert env.step(reply)[1] == 1.0, reply
    path.write_text(json.dumps({"id": "broken", "prompt": "p", "tests": [{"input": "1"}]}) + "\n")
    with pytest.raises(TaskFileError, match=r"mine 'broken': tests\[0\] needs \"input\" and \"output\""):
        CodeEnv(f"jsonl:{path}", sandbox=sandbox)


def test_few_shot_examples_match_the_kind_of_task(sandbox: Sandbox) -> None:
    env = CodeEnv(TASKS, sandbox=sandbox, few_shot=2)
    obs, _ = env.reset()
    assert [m["role"] for m in obs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "standard input" in obs[1]["content"] and "```python" in obs[2]["content"]
    for example in bundled_tasks("code_fewshot"):
        compile(example.info["reply"].split("```python\n")[1].split("```")[0], example.id, "exec")
    with pytest.raises(ValueError, match="few_shot must be between 0 and 2"):
        CodeEnv(TASKS, sandbox=sandbox, few_shot=3)


def test_gymnasium_checker_and_registration(sandbox: Sandbox) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(CodeEnv(TASKS, sandbox=sandbox), skip_render_check=True)
    env = gymnasium.make("rewardgym/Code-v0", sandbox=sandbox)
    assert isinstance(env.unwrapped, CodeEnv) and env.unwrapped.max_attempts == 3
    env.reset(seed=0, options={"task_id": "code-basic/gcd"})
    _, reward, *_ = env.step("```python\nimport math\nprint(math.gcd(*map(int, input().split())))\n```")
    assert reward == 1.0
    assert {"rewardgym/Code-v0", "rewardgym/HumanEval-v0"} <= set(envs.env_ids())
    assert "stdin/stdout" in envs.env_description("rewardgym/Code-v0")

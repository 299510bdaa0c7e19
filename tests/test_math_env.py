"""The math environment, single- and multi-turn, including hostile answers."""

from __future__ import annotations

import math
import time

import pytest

import envs
from envs import MathEnv, Task, TaskList

TASKS = TaskList(
    [
        Task(id="half", prompt="What is 1/2 as a decimal?", answer="0.5"),
        Task(id="sum", prompt="What is 2 + 3?", answer="5"),
    ],
    name="tiny-math",
)


def test_single_turn_correct_and_wrong() -> None:
    env = MathEnv(TASKS)
    env.reset(options={"task_id": "half"})
    _, reward, terminated, truncated, info = env.step(r"1 divided by 2 is \boxed{\frac{1}{2}}")
    assert (reward, terminated, truncated, info["passed"]) == (1.0, True, False, True)
    assert info["reward_components"] == {"math": 1.0, "format": 1.0}
    env.reset(options={"task_id": "sum"})
    _, reward, terminated, _, info = env.step("Answer: 6")
    assert (reward, terminated, info["passed"]) == (0.0, True, False)
    assert info["reward_components"] == {"math": 0.0, "format": 0.0}
    assert info["reward_info"]["math"]["answer"] == "6"


def test_multi_turn_feedback_then_success() -> None:
    env = MathEnv(TASKS, max_attempts=3, feedback="Nope, again.")
    env.reset(options={"task_id": "sum"})
    obs, reward, terminated, _, info = env.step(r"\boxed{6}")
    assert (reward, terminated) == (0.0, False)
    assert obs[-1] == {"role": "user", "content": "Nope, again."}
    assert info["passed"] is False
    obs, reward, terminated, _, info = env.step(r"\boxed{5}")
    assert (reward, terminated, info["turn"]) == (1.0, True, 2)


def test_multi_turn_ends_after_the_last_attempt() -> None:
    env = envs.make("rewardgym/MathMultiTurn-v0", tasks=TASKS)
    env.reset(options={"task_id": "sum"})
    results = [env.step(r"\boxed{4}") for _ in range(3)]
    assert [r[2] for r in results] == [False, False, True]  # terminated on the third attempt
    assert results[-1][1] == 0.0 and results[-1][3] is False


def test_few_shot_examples_come_before_the_problem() -> None:
    env = MathEnv(TASKS, few_shot=2)
    obs, _ = env.reset(options={"task_id": "sum"})
    assert [m["role"] for m in obs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert r"\boxed{42}" in obs[2]["content"] and obs[-1]["content"] == "What is 2 + 3?"
    with pytest.raises(ValueError, match="few_shot must be between 0 and 4"):
        MathEnv(TASKS, few_shot=5)


def test_format_weight_adds_a_format_bonus() -> None:
    env = MathEnv(TASKS, format_weight=0.5)
    env.reset(options={"task_id": "sum"})
    assert env.step(r"\boxed{5}")[1] == 1.5
    env.reset(options={"task_id": "sum"})
    assert env.step("Answer: 5")[1] == 1.0


def test_hostile_answers_give_a_score_or_a_scored_error_and_the_env_carries_on() -> None:
    env = MathEnv(TASKS, verifier_timeout_s=2.0)
    cases = ["", " " * 10, r"\boxed{" + "1" * 100_000 + "}", r"\boxed{9^{9^{9^{9^{9}}}}}", "\x00\ufffd" * 100]
    for answer in cases:
        env.reset(options={"task_id": "sum"})
        _, reward, terminated, _, info = env.step(answer)
        assert terminated
        if info["reward_error"] is None:
            assert reward == 0.0
        else:
            assert math.isnan(reward) and "WorkerTimeout" in info["reward_error"]
    env.reset(options={"task_id": "sum"})
    assert env.step(r"\boxed{5}")[1] == 1.0


def test_a_verifier_failure_ends_a_multi_turn_episode_as_an_error_not_as_a_wrong_answer() -> None:
    """`9^{9^{9^{9^{9}}}}` hangs SymPy; the real worker is killed at the deadline. The model must
    not be told "that is not right": nobody knows whether it was."""
    env = MathEnv(TASKS, max_attempts=3, verifier_timeout_s=2.0)
    env.reset(options={"task_id": "sum"})
    obs, reward, terminated, truncated, info = env.step(r"\boxed{9^{9^{9^{9^{9}}}}}")
    assert (terminated, truncated, info["turn"]) == (True, False, 1)
    assert math.isnan(reward) and "WorkerTimeout" in info["reward_error"]
    assert obs[-1]["role"] == "assistant"  # no feedback after the reply
    assert info["metrics"]["reward_errors"] == 1
    env.reset(options={"task_id": "sum"})
    assert env.step(r"\boxed{4}")[2] is False  # a plain wrong answer still gets another try


def test_a_megabyte_reply_is_scored_without_blocking() -> None:
    env = envs.make("rewardgym/Math-v0", tasks=TASKS)
    for reply in ["\\boxed{" * 150_000, "answer" + " " * 1_000_000, "<answer>" * 125_000]:
        env.reset(options={"task_id": "sum"})
        start = time.monotonic()
        _, reward, terminated, _, info = env.step(reply)
        assert time.monotonic() - start < 2.0
        assert (reward, terminated, info["reward_error"]) == (0.0, True, None)


def test_unknown_answer_formats_fail_when_the_env_is_made() -> None:
    with pytest.raises(ValueError, match="unknown answer format 'xml'; use one of boxed, answer_line"):
        MathEnv(TASKS, answer_formats=["xml"])  # type: ignore[list-item]
    assert MathEnv(TASKS, answer_formats="answer_tag").reward.terms[0][0].formats == ("answer_tag",)  # type: ignore[arg-type]


def test_splits_of_the_bundled_set() -> None:
    train = MathEnv(split="train").tasks
    evals = MathEnv(split="eval").tasks
    assert len(train) + len(evals) == 200 and 20 <= len(evals) <= 60
    assert not {t.id for t in train} & {t.id for t in evals}


def test_reasoning_gym_env_uses_the_generators_own_verifier() -> None:
    env = envs.make("rewardgym/ReasoningGym-v0", dataset="basic_arithmetic", size=10)
    env.reset(options={"task_index": 0})
    answer = env.episode.task.answer
    _, reward, *_, info = env.step(f"Let me think. <answer>{answer}</answer>")
    assert reward == 1.0 and info["passed"] is True
    env.reset(options={"task_index": 0})
    assert env.step("<answer>definitely not it</answer>")[1] == 0.0

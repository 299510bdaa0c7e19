"""The MultiTurnEnv contract: gymnasium's checker, reset/step, budgets, sync and async APIs."""

from __future__ import annotations

import asyncio
import math
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import (
    ConversationSpace,
    Episode,
    EpisodeNotRunning,
    MultiTurnEnv,
    Reaction,
    ReplySpace,
    Task,
    TaskList,
)
from rewards import FunctionReward, Sample, Score
from rewards.wire import score_to_json

TASKS = TaskList([Task(id=f"t{i}", prompt=f"say {i}", answer=str(i)) for i in range(5)], name="say")


def said_answer(sample: Sample) -> bool:
    return sample.completion.strip() == sample.reference


class UntilDone(MultiTurnEnv):
    """Multi-turn: the user says "go on" until the assistant writes "done"."""

    async def react(self, episode: Episode) -> Reaction:
        if "done" in episode.last_reply:
            return Reaction(done=True)
        return Reaction(messages=({"role": "user", "content": "go on"},))


def make_simple(**kwargs) -> MultiTurnEnv:
    return MultiTurnEnv(TASKS, FunctionReward(said_answer, name="said"), **kwargs)


@pytest.mark.parametrize("env_id", envs.env_ids())
def test_gymnasium_checker_passes_on_every_shipped_env_with_warnings_as_errors(env_id: str) -> None:
    env = gymnasium.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()


def test_checker_passes_on_a_custom_multi_turn_env() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # no registry spec here, so gymnasium cannot re-make it per render mode
        check_env(
            UntilDone(TASKS, FunctionReward(said_answer, name="said"), max_turns=4), skip_render_check=True
        )


def test_spaces_describe_messages() -> None:
    space = ConversationSpace()
    assert [{"role": "user", "content": "hi"}] in space
    assert [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}] in space  # fmt: skip
    assert [{"role": "wizard", "content": "hi"}] not in space
    assert [{"role": "user"}] not in space
    assert ("not", "a list") not in space
    space.seed(3)
    first = space.sample()
    space.seed(3)
    assert space.sample() == first and first in space
    assert "text" in ReplySpace() and {"role": "assistant", "content": "x"} in ReplySpace()
    assert {"role": "user", "content": "x"} not in ReplySpace()


def test_reset_is_seeded_and_options_choose_the_task() -> None:
    env = make_simple()
    first, info = env.reset(seed=7)
    assert env.reset(seed=7)[0] == first
    assert info == {"task_id": env.episode.task.id, "turn": 0, "num_tokens": 0}
    seen = {env.reset(seed=s)[1]["task_id"] for s in range(30)}
    assert len(seen) > 1  # the seed really picks
    assert env.reset(options={"task_id": "t3"})[0][-1]["content"] == "say 3"
    assert env.reset(options={"task_index": 1})[1]["task_id"] == "t1"
    given = Task(id="custom", prompt="say 9", answer="9")
    assert env.reset(options={"task": given})[1]["task_id"] == "custom"
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['task_idx'\]"):
        env.reset(options={"task_idx": 1})
    with pytest.raises(ValueError, match="at most one"):
        env.reset(options={"task_id": "t1", "task_index": 2})
    with pytest.raises(KeyError, match="no task with id 'nope'"):
        env.reset(options={"task_id": "nope"})


def test_single_turn_step_scores_and_terminates() -> None:
    env = make_simple(system_prompt="be brief")
    obs, _ = env.reset(options={"task_id": "t2"})
    assert obs == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say 2"}]
    obs, reward, terminated, truncated, info = env.step("2")
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert obs[-1] == {"role": "assistant", "content": "2"}
    assert info["task_id"] == "t2" and info["passed"] is True and info["reward_error"] is None
    assert info["metrics"] == {"turns": 1, "num_tokens": 1, "reward_errors": 0}
    with pytest.raises(EpisodeNotRunning, match="has ended"):
        env.step("again")


def test_step_before_reset_and_bad_actions_are_clear_errors() -> None:
    env = make_simple()
    with pytest.raises(EpisodeNotRunning, match="before step"):
        env.step("x")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="an action is the assistant's reply"):
        env.step(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an action is the assistant's reply"):
        env.step({"role": "user", "content": "x"})  # type: ignore[arg-type]
    assert env.step({"role": "assistant", "content": "x"})[2] is True  # a message is fine


def test_multi_turn_gets_feedback_until_done_and_reward_comes_at_the_end() -> None:
    env = UntilDone(TASKS, FunctionReward(lambda s: float(len(s.messages)), name="length"))
    env.reset(options={"task_id": "t0"})
    obs, reward, terminated, truncated, info = env.step("thinking")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs[-1] == {"role": "user", "content": "go on"}
    assert "reward_components" not in info  # no score yet
    obs, reward, terminated, truncated, info = env.step("done")
    assert (terminated, truncated) == (True, False)
    assert reward == 4.0  # user, assistant, user, assistant
    assert info["turn"] == 2


def test_max_turns_and_max_tokens_truncate() -> None:
    reward = FunctionReward(lambda s: 1.0, name="one")
    env = UntilDone(TASKS, reward, max_turns=2)
    env.reset(seed=0)
    assert env.step("a")[3] is False
    _, r, terminated, truncated, _ = env.step("b")
    assert (r, terminated, truncated) == (1.0, False, True)  # scored when cut off

    env = UntilDone(TASKS, reward, max_tokens=10)
    env.reset(seed=0)
    assert env.tokens_left == 10
    assert env.step("x", num_tokens=6)[3] is False  # the policy's own count wins
    assert env.tokens_left == 4
    assert env.step("y", num_tokens=4)[3] is True
    assert env.tokens_left == 0


def test_token_counter_is_used_when_the_policy_gives_no_count() -> None:
    env = make_simple(token_counter=lambda text: 100 * len(text))
    env.reset(seed=0)
    assert env.step("abc")[4]["num_tokens"] == 300
    assert envs.approximate_token_count("Hello, world! 3+4") == 7


def test_a_failing_reward_gives_nan_and_an_error_in_info_not_an_exception() -> None:
    env = MultiTurnEnv(TASKS, FunctionReward(lambda s: 1 / 0, name="div"))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step("x")
    assert math.isnan(reward) and terminated
    assert info["reward_error"] == "div: ZeroDivisionError: division by zero"
    assert info["metrics"]["reward_errors"] == 1 and info["score"] is None


def test_async_api_and_sync_api_inside_a_running_loop() -> None:
    env = make_simple()

    async def episode() -> float:
        await env.areset(options={"task_id": "t4"})
        _, reward, *_ = await env.astep("4")
        with pytest.raises(
            RuntimeError, match=r"inside a running asyncio event loop.*await env.unwrapped.astep"
        ):
            env.step("4")
        return reward

    assert asyncio.run(episode()) == 1.0


def test_render_and_close() -> None:
    env = make_simple(render_mode="ansi")
    env.reset(options={"task_id": "t1"})
    env.step("1")
    assert env.render() == "[user] say 1\n\n[assistant] 1"
    env.close()
    env.close()
    with pytest.raises(ValueError, match="render_mode"):
        make_simple(render_mode="rgb_array")


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        make_simple(max_turns=0)
    with pytest.raises(ValueError, match="is empty"):
        MultiTurnEnv(TaskList([], name="none"), FunctionReward(said_answer, name="said"))


def test_observations_are_fresh_copies() -> None:
    env = make_simple()
    obs, _ = env.reset(options={"task_id": "t1"})
    obs[-1]["content"] = "tampered"
    obs2, *_ = env.step("1")
    assert obs2[0]["content"] == "say 1"


def test_score_objects_stay_intact() -> None:
    score = Score(value=math.nan, error="x")
    assert score_to_json(score)["value"] is None and not score.ok

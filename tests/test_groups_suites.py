"""Groups of G environments on one task, and weighted suites."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import envs
from envs import EnvGroup, MathEnv, MultiTurnEnv, Suite, SuiteError, SuiteMember, Task, TaskList
from rewards import FunctionReward, GroupReward, Sample, Score

TASKS = TaskList([Task(id=f"t{i}", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(6)])


class ShortestWins(GroupReward):
    """1 for the shortest completion(s) of the group, 0 for the rest."""

    name = "shortest"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        shortest = min(len(s.completion) for s in samples)
        return [Score(value=float(len(s.completion) == shortest)) for s in samples]


class FailingGroupReward(GroupReward):
    name = "judge"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        raise TimeoutError("judge timed out")


def with_group_reward(group_reward: GroupReward | None) -> MultiTurnEnv:
    return MultiTurnEnv(
        TASKS,
        FunctionReward(lambda s: s.completion.strip() == s.reference, name="exact"),
        group_reward=group_reward,
    )


async def play(group: EnvGroup, replies: list[str]) -> None:
    for env, reply in zip(group.envs, replies, strict=True):
        await env.astep(reply)


def test_all_members_get_the_same_task_and_the_seed_picks_it() -> None:
    group = EnvGroup(lambda: MathEnv(TASKS), size=4)
    results = asyncio.run(group.areset(seed=11))
    assert len({info["task_id"] for _, info in results}) == 1
    again = EnvGroup(lambda: MathEnv(TASKS), size=4)
    assert asyncio.run(again.areset(seed=11))[0][1]["task_id"] == results[0][1]["task_id"]
    given = asyncio.run(group.areset(task=TASKS[2]))
    assert {info["task_id"] for _, info in given} == {"t2"}


def test_without_a_group_reward_the_episode_rewards_pass_through() -> None:
    group = EnvGroup(lambda: with_group_reward(None), size=3)

    async def run() -> envs.GroupResult:
        await group.areset(task=TASKS[1])
        await play(group, ["2", "3", "2"])
        return await group.finish()

    result = asyncio.run(run())
    assert result.rewards_G == result.episode_rewards_G == (1.0, 0.0, 1.0)
    assert result.group_scores_G is None


def test_a_group_reward_is_added_once_all_members_are_done() -> None:
    group = EnvGroup(lambda: with_group_reward(ShortestWins()), size=3, group_reward_weight=0.5)

    async def run() -> envs.GroupResult:
        await group.areset(task=TASKS[1])
        await play(group, ["2", "2 ", "wrong"])
        return await group.finish()

    result = asyncio.run(run())
    assert result.episode_rewards_G == (1.0, 1.0, 0.0)
    assert result.group_scores_G is not None and [s.value for s in result.group_scores_G] == [1.0, 0.0, 0.0]
    assert result.rewards_G == (1.5, 1.0, 0.0)  # episode reward + 0.5 * group score


def test_finish_before_everyone_is_done_is_an_error() -> None:
    group = EnvGroup(lambda: with_group_reward(ShortestWins()), size=2)

    async def run() -> None:
        await group.areset(task=TASKS[0])
        await group.envs[0].astep("0")
        await group.finish()

    with pytest.raises(RuntimeError, match=r"group members \[1\] have not finished"):
        asyncio.run(run())


def test_a_failing_group_reward_marks_every_member_with_an_error() -> None:
    group = EnvGroup(lambda: with_group_reward(FailingGroupReward()), size=2)

    async def run() -> envs.GroupResult:
        await group.areset(task=TASKS[0])
        await play(group, ["0", "1"])
        return await group.finish()

    result = asyncio.run(run())
    assert all(math.isnan(r) for r in result.rewards_G) and result.errors == 2
    assert result.group_scores_G is not None
    assert {s.error for s in result.group_scores_G} == {"judge: TimeoutError: judge timed out"}


def test_suites_sample_members_by_weight() -> None:
    suite = Suite(
        "mix", (SuiteMember("rewardgym/Math-v0", weight=3.0), SuiteMember("rewardgym/Arithmetic-v0"))
    )
    assert suite.probabilities == {"rewardgym/Math-v0": 0.75, "rewardgym/Arithmetic-v0": 0.25}
    rng = np.random.default_rng(0)
    picks = [suite.sample_member(rng).env_id for _ in range(2000)]
    assert 0.70 < picks.count("rewardgym/Math-v0") / 2000 < 0.80
    made = suite.make_envs()
    assert set(made) == {"rewardgym/Math-v0", "rewardgym/Arithmetic-v0"}
    assert envs.get_suite("rewardgym/math").members[0].env_id == "rewardgym/Math-v0"


def test_suite_files_in_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "mix.toml"
    toml.write_text(
        'name = "mix"\n[[members]]\nenv = "rewardgym/Math-v0"\nweight = 2.0\nkwargs = { few_shot = 2 }\n'
        '[[members]]\nenv = "rewardgym/MathMultiTurn-v0"\nlabel = "retry"\n'
    )
    suite = envs.get_suite(str(toml))
    assert [m.name for m in suite.members] == ["rewardgym/Math-v0", "retry"]
    assert len(suite.members[0].make_env().examples) == 4
    yaml_file = tmp_path / "mix.yaml"
    yaml_file.write_text("name: y\nmembers:\n  - env: rewardgym/Math-v0\n")
    assert envs.get_suite(str(yaml_file)).name == "y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n', "needs a non-empty 'members' list"),
        ('name = "x"\ncolour = 1\n[[members]]\nenv = "a"\n', r"unknown keys \['colour'\]"),
        ('name = "x"\n[[members]]\nweight = 1\n', "member 0 needs an 'env' id"),
        ('name = "x"\n[[members]]\nenv = "a"\nweight = 0\n', "weight of 'a' must be > 0"),
        ('name = "x"\n[[members]]\nenv = "a"\n[[members]]\nenv = "a"\n', r"members \['a'\] appear twice"),
        ('name = "x"\n[[members]\n', "cannot parse"),
        (
            'name = "x"\n[[members]]\nenv = "a"\nweight = "heavy"\n',
            r"member 0 \('a'\): 'weight' must be a finite number, got 'heavy'",
        ),
        ('name = "x"\n[[members]]\nenv = "a"\nweight = inf\n', r"'weight' must be a finite number, got inf"),
        (
            'name = "x"\n[[members]]\nenv = "a"\n[[members]]\nenv = "b"\nkwargs = "few_shot=2"\n',
            r"member 1 \('b'\): 'kwargs' must be a table of keyword arguments, got 'few_shot=2'",
        ),
    ],
)
def test_bad_suite_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=message):
        envs.get_suite(str(path))


def test_unknown_suite_name() -> None:
    with pytest.raises(SuiteError, match=r"unknown suite 'rewardgym/maths'\. Did you mean rewardgym/math"):
        envs.get_suite("rewardgym/maths")

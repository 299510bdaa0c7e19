"""Small environments for training tests, registered on import (config `imports` loads this file).

`tests/LetterA-v0` rewards the share of the letter "a" in the reply: a random tiny model
starts near 1/30 and can raise it quickly, so a learning test finishes in about a minute.
Its `mode` makes the faults the trainer must survive, for real:
- "broken_env": the environment raises in the middle of odd tasks' episodes;
- "remote": the reward is a `RemoteReward` at `reward_url` (a server that may be down);
- "constant_odd": odd tasks score 1.0 for every reply (zero-variance groups);
- "retry": two turns, with feedback after the first reply (multi-turn token sequences);
- "broken_group": a group reward that raises for every group.
"""

from __future__ import annotations

from collections.abc import Sequence

from envs import Episode, GeneratedTasks, MultiTurnEnv, Reaction, Task, register_env
from rewards import RemoteReward, Sample, Score
from rewards.base import GroupReward, Reward


class LetterShare(Reward):
    name = "letter_a"

    async def compute(self, sample: Sample) -> Score:
        text = sample.completion.replace(" ", "")
        share = text.count("a") / max(len(text), 1)
        if sample.task_id is not None and _index(sample.task_id) % 2 and self.constant_odd:
            share = 1.0
        return Score(value=share, components={"share_a": share, "length": float(len(text))})

    def __init__(self, constant_odd: bool = False) -> None:
        self.constant_odd = constant_odd


class BrokenGroupReward(GroupReward):
    name = "broken_group"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        raise RuntimeError("the judge is down")


def _index(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[1])


def _task(index: int) -> Task:
    return Task(id=f"say-{index}", prompt=f"Say something {index}.", answer="aaaa")


class LetterEnv(MultiTurnEnv):
    def __init__(self, mode: str = "plain", reward_url: str = "", render_mode: str | None = None) -> None:
        reward: Reward = LetterShare(constant_odd=mode == "constant_odd")
        if mode == "remote":
            reward = RemoteReward("letter_a", reward_url)
        group_reward = BrokenGroupReward() if mode == "broken_group" else None
        super().__init__(
            GeneratedTasks(_task, size=16, name="say"),
            reward,
            group_reward=group_reward,
            render_mode=render_mode,
        )
        self.mode = mode

    async def react(self, episode: Episode) -> Reaction:
        if self.mode == "broken_env" and _index(episode.task.id) % 2:
            raise RuntimeError(f"the environment broke on {episode.task.id}")
        if self.mode == "retry" and episode.turns < 2:
            return Reaction(messages=({"role": "user", "content": "More a, please."},))
        return Reaction(done=True)


register_env("tests/LetterA-v0", LetterEnv, description="share of the letter a in the reply (training tests)")

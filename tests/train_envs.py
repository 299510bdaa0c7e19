"""Small environments for training tests, registered on import (config `imports` loads this file).

`tests/LetterA-v0` rewards the share of the letter "a" in the reply: a random tiny model
starts near 1/30 and can raise it quickly, so a learning test finishes in about a minute.
"""

from __future__ import annotations

from envs import GeneratedTasks, MultiTurnEnv, Task, register_env
from rewards import Sample, Score
from rewards.base import Reward


class LetterShare(Reward):
    name = "letter_a"

    async def compute(self, sample: Sample) -> Score:
        text = sample.completion.replace(" ", "")
        return Score(value=text.count("a") / max(len(text), 1))


class RaisesOnStep(Reward):
    """Fails for tasks whose index is odd: an environment breaking mid-rollout."""

    name = "raises"

    async def compute(self, sample: Sample) -> Score:
        if int(sample.task_id.rsplit("-", 1)[1]) % 2:
            raise RuntimeError("this environment is broken for odd tasks")
        return Score(value=float(len(sample.completion) % 3))


def _task(index: int) -> Task:
    return Task(id=f"say-{index}", prompt=f"Say something {index}.")


class LetterEnv(MultiTurnEnv):
    def __init__(self, reward: str = "letter_a", render_mode: str | None = None) -> None:
        chosen = LetterShare() if reward == "letter_a" else RaisesOnStep()
        super().__init__(GeneratedTasks(_task, size=16, name="say"), chosen, render_mode=render_mode)


register_env("tests/LetterA-v0", LetterEnv, description="share of the letter a in the reply (training tests)")

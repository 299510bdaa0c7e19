"""An environment's reward on its own, for serving an environment by name.

A trainer elsewhere plays the episode; the reward server scores the finished transcript
with the environment's own reward. A sample that names its `task_id` but carries no
`reference` gets the task's answer and metadata looked up in the environment's tasks, so
remote clients need not ship gold answers or tests.
"""

from __future__ import annotations

import dataclasses

from envs.core import MultiTurnEnv
from rewards.base import Reward
from rewards.types import Sample, Score


class EnvReward(Reward):
    """Scores samples exactly as the environment's episodes are scored."""

    def __init__(self, env: MultiTurnEnv, name: str) -> None:
        self.env = env
        self.name = name
        self.__doc__ = f"The reward of the environment {name} ({type(env.reward).__name__})."

    async def compute(self, sample: Sample) -> Score:
        if sample.reference is None and sample.task_id:
            try:
                task = self.env.tasks.find(sample.task_id)
            except KeyError as exc:
                raise ValueError(exc.args[0]) from None
            sample = dataclasses.replace(sample, reference=task.answer, info={**task.info, **sample.info})
        return await self.env.reward.score(sample)

"""Test-only rewards for a real reward server (`rewardgym serve --import tests/server_rewards.py`):
each makes one server behaviour easy to see from the client side."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence

from rewards import GroupReward, Reward, Sample, Score, register_reward


class Echo(Reward):
    """The completion read as a number: order and routing are visible in the values."""

    name = "echo"

    async def compute(self, sample: Sample) -> Score:
        return Score(value=float(sample.completion), info={"pid": os.getpid()})


class Slow(Reward):
    """Sleeps `info["sleep_s"]` seconds, then scores 1 (with the server's pid in `info`):
    a reward that takes time."""

    name = "slow"

    async def compute(self, sample: Sample) -> Score:
        await asyncio.sleep(float(sample.info.get("sleep_s", 0.0)))
        return Score(value=1.0, passed=True, info={"pid": os.getpid()})


class Flaky(Reward):
    """Raises when the completion says "boom", else scores the completion's length."""

    name = "flaky"

    async def compute(self, sample: Sample) -> Score:
        if "boom" in sample.completion:
            raise RuntimeError("boom requested")
        return Score(value=float(len(sample.completion)))


def odd_score(completion: str) -> Score:
    """What a careless reward hands back, by the completion: "inf" an infinite value,
    "numpy" numpy numbers throughout, "cycle" an `info` that contains itself; else 1."""
    import numpy as np

    if completion == "inf":
        return Score(value=math.inf)
    if completion == "numpy":
        return Score(
            value=np.float32(0.5),  # type: ignore[arg-type]
            components={"part": np.float32(0.25)},  # type: ignore[dict-item]
            passed=np.bool_(True),  # type: ignore[arg-type]
            info={"count": np.int64(3), "array": np.arange(2), "flag": np.bool_(False)},
        )
    if completion == "cycle":
        info: dict[str, object] = {}
        info["self"] = info
        return Score(value=1.0, info=info)
    return Score(value=1.0)


class Odd(Reward):
    """`odd_score` of each completion."""

    name = "odd"

    async def compute(self, sample: Sample) -> Score:
        return odd_score(sample.completion)


class OddGroup(GroupReward):
    """`odd_score` of each completion, as a group reward."""

    name = "odd_group"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        return [odd_score(s.completion) for s in samples]


class RankByLength(GroupReward):
    """The rank of each completion's length within its group, scaled to [0, 1]."""

    name = "rank_by_length"

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        order = sorted(range(len(samples)), key=lambda i: len(samples[i].completion))
        top = max(len(samples) - 1, 1)
        ranks = {index: rank for rank, index in enumerate(order)}
        return [Score(value=ranks[i] / top) for i in range(len(samples))]


register_reward("echo", Echo)
register_reward("slow", Slow)
register_reward("flaky", Flaky)
register_reward("rank_by_length", RankByLength)
register_reward("odd", Odd)
register_reward("odd_group", OddGroup)

"""The reward contract: a sample in, a `Score` out, and a bad item never sinks the batch.

Authors implement `compute` (or `compute_group`); callers use `score` (or `score_group`),
which turns any exception into a `Score` carrying the error, so one failing item is an
error on that item and the rest of the batch is scored as usual.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from rewards.types import Sample, Score


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Reward(ABC):
    """One source of reward for single samples.

    Subclasses set `name` and implement `compute`. Rewards are async because many of them
    wait on something (a judge over HTTP, a sandbox, a worker process); a pure rule simply
    never awaits.
    """

    name: str = "reward"

    @abstractmethod
    async def compute(self, sample: Sample) -> Score:
        """Score one sample; may raise, `score` turns that into an error item."""

    async def score(self, sample: Sample) -> Score:
        """Score one sample. Never raises for a bad item: the error goes in `Score.error`."""
        try:
            result = await self.compute(sample)
        except Exception as exc:
            return Score.failure(f"{self.name}: {_describe(exc)}")
        if not isinstance(result, Score):
            return Score.failure(f"{self.name}: compute() returned {type(result).__name__}, expected Score")
        return result

    async def score_batch(self, samples: Sequence[Sample]) -> list[Score]:
        """Score many samples concurrently; errors stay on their items."""
        return list(await asyncio.gather(*(self.score(s) for s in samples)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class GroupReward(ABC):
    """A reward that needs all G samples of one prompt at once (tournaments, discriminators)."""

    name: str = "group_reward"

    @abstractmethod
    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        """One score per sample, in order; may raise."""

    async def score_group(self, samples: Sequence[Sample]) -> list[Score]:
        """Score a group. If the group reward fails, every item carries the error."""
        try:
            scores = await self.compute_group(samples)
        except Exception as exc:
            return [Score.failure(f"{self.name}: {_describe(exc)}") for _ in samples]
        if len(scores) != len(samples):
            error = f"{self.name}: returned {len(scores)} scores for {len(samples)} samples"
            return [Score.failure(error) for _ in samples]
        return list(scores)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


RewardFn = Callable[[Sample], "float | bool | Score | Awaitable[float | bool | Score]"]


class FunctionReward(Reward):
    """Wrap a plain function `fn(sample) -> float | bool | Score` (sync or async) as a Reward.

    A bool means pass/fail and scores 1.0 or 0.0 with `passed` set; a float is the value.
    """

    def __init__(self, fn: RewardFn, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function_reward")

    async def compute(self, sample: Sample) -> Score:
        result = self.fn(sample)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Score):
            return result
        if isinstance(result, bool):
            return Score(value=float(result), passed=result)
        if isinstance(result, int | float):
            value = float(result)
            if math.isnan(value):
                raise ValueError("the function returned NaN")
            return Score(value=value)
        raise TypeError(f"expected float, bool or Score, got {type(result).__name__}")


def reward_function(name: str | None = None) -> Callable[[RewardFn], FunctionReward]:
    """Decorator form of `FunctionReward`: `@reward_function("length")`."""

    def wrap(fn: RewardFn) -> FunctionReward:
        return FunctionReward(fn, name=name)

    return wrap

"""Where a hosted reward's code runs.

`InlineExecutor` awaits the reward in the server's event loop: right for rules (microseconds),
for rewards that wait on something (judges over HTTP, the sandbox) and for the math reward,
which already sends math-verify to its own worker processes. Its per-item deadline can only
interrupt a reward at an `await`.

`ProcessExecutor` runs a registered reward in worker processes (`WorkerPool`): right for
CPU-bound Python that would stall the event loop. Each item has a hard deadline that kills
a stuck worker; a worker that dies (crash, OOM, `kill -9`) fails only the item it held and
is replaced.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rewards.base import GroupReward, Reward
from rewards.types import Sample, Score
from rewards.worker_pool import WorkerCrashed, WorkerError, WorkerPool, WorkerTimeout

NO_TIMEOUT_S = 24 * 3600.0  # WorkerPool wants a number; a day stands for "none"


class Executor(Protocol):
    kind: ClassVar[str]

    async def score(self, sample: Sample) -> Score: ...
    async def score_group(self, samples: Sequence[Sample]) -> list[Score]: ...
    def close(self) -> None: ...


def _timed_out(name: str, timeout_s: float) -> str:
    return f"{name}: timed out after {timeout_s:g} s"


class InlineExecutor:
    kind: ClassVar[str] = "inline"

    def __init__(self, name: str, reward: Reward | GroupReward, timeout_s: float | None) -> None:
        self.name = name
        self.reward = reward
        self.timeout_s = timeout_s

    async def score(self, sample: Sample) -> Score:
        assert isinstance(self.reward, Reward)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.reward.score(sample)
        except TimeoutError:
            return Score.failure(_timed_out(self.name, self.timeout_s or 0))

    async def score_group(self, samples: Sequence[Sample]) -> list[Score]:
        assert isinstance(self.reward, GroupReward)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.reward.score_group(samples)
        except TimeoutError:
            return [Score.failure(_timed_out(self.name, self.timeout_s or 0)) for _ in samples]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RewardSpec:
    """What a worker process needs to build the reward itself: the registered name, its
    parameters and the user modules that register it."""

    reward: str
    params: dict[str, Any]
    imports: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"reward": self.reward, "params": self.params, "imports": list(self.imports)})


# -- inside a worker process ---------------------------------------------------------------

_worker_rewards: dict[str, Reward | GroupReward] = {}
_worker_loop: asyncio.AbstractEventLoop | None = None


def _worker_reward(spec_json: str) -> Reward | GroupReward:
    if spec_json not in _worker_rewards:
        from rewards.plugins import import_user_module
        from rewards.registry import make_reward

        spec = json.loads(spec_json)
        for module in spec["imports"]:
            import_user_module(module)
        import rewards  # noqa: F401  (registers the built-in rewards)

        _worker_rewards[spec_json] = make_reward(spec["reward"], **spec["params"])
    return _worker_rewards[spec_json]


def _run(coroutine: Any) -> Any:
    global _worker_loop
    if _worker_loop is None:
        _worker_loop = asyncio.new_event_loop()
    return _worker_loop.run_until_complete(coroutine)


def score_in_worker(spec_json: str, sample: Sample | None) -> Score:
    """Worker-side entry point; `sample=None` only builds the reward (warm-up)."""
    reward = _worker_reward(spec_json)
    if sample is None:
        return Score(value=0.0)
    assert isinstance(reward, Reward)
    return _run(reward.score(sample))


def score_group_in_worker(spec_json: str, samples: Sequence[Sample]) -> list[Score]:
    reward = _worker_reward(spec_json)
    assert isinstance(reward, GroupReward)
    return _run(reward.score_group(samples))


# -- in the server ---------------------------------------------------------------------------


class ProcessExecutor:
    kind: ClassVar[str] = "process"

    def __init__(
        self,
        name: str,
        spec: RewardSpec,
        group: bool,
        *,
        num_workers: int | None,
        timeout_s: float | None,
        memory_limit_mb: int | None = 4096,
    ) -> None:
        self.name = name
        self.spec_json = spec.to_json()
        self.timeout_s = timeout_s
        self.pool = WorkerPool(
            score_group_in_worker if group else score_in_worker,
            num_workers=num_workers,
            timeout_s=timeout_s or NO_TIMEOUT_S,
            memory_limit_mb=memory_limit_mb,
            warmup_args=None if group else (self.spec_json, None),
            name=f"reward-{name}",
        )

    async def _call(self, payload: Any) -> Any:
        try:
            return await self.pool.run(self.spec_json, payload), None
        except WorkerTimeout:
            return None, f"{_timed_out(self.name, self.timeout_s or NO_TIMEOUT_S)} (worker killed)"
        except WorkerCrashed as exc:
            return None, f"{self.name}: the worker process died while scoring this item ({exc})"
        except WorkerError as exc:  # building the reward failed inside the worker
            return None, f"{self.name}: {exc}"

    async def score(self, sample: Sample) -> Score:
        result, error = await self._call(sample)
        return Score.failure(error) if error else result

    async def score_group(self, samples: Sequence[Sample]) -> list[Score]:
        result, error = await self._call(tuple(samples))
        return [Score.failure(error) for _ in samples] if error else result

    def close(self) -> None:
        self.pool.close()

"""Rewards scored by a reward server, as drop-ins for local ones (environments, evaluator, trainer).

An environment scores one sample at a time, and G environments do so at once; sending
each as its own request would cost a round trip per sample. So single calls that arrive
within `batch_window_s` of each other on one event loop go out as one request, and each
caller gets its own score back. A failed request fails every caller in it, which
`Reward.score` turns into an error item naming the failure, never a silent 0.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from rewards.base import GroupReward, Reward, _describe
from rewards.client import RewardClient, forget_closed_loops
from rewards.types import Sample, Score

T = TypeVar("T")
R = TypeVar("R")


class _MicroBatcher(Generic[T, R]):
    """Collects single calls on one event loop and sends them together."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[list[T]], Awaitable[list[R]]],
        window_s: float,
        max_size: int,
    ) -> None:
        self.loop = loop
        self.send = send
        self.window_s = window_s
        self.max_size = max_size
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight: set[asyncio.Task[None]] = set()  # held so they are not collected mid-way

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = self.loop.create_future()
        self.pending.append((item, future))
        if len(self.pending) >= self.max_size:
            self._flush()
        elif self.timer is None:
            self.timer = self.loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch = [(item, future) for item, future in self.pending if not future.done()]  # not given up
        self.pending = []
        if batch:
            task = self.loop.create_task(self._send(batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"got {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


class _PerLoop(Generic[T, R]):
    """One micro-batcher per event loop, made on first use there: futures, timers and
    connections belong to a loop, and a reward outlives the private loops of sync envs."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[R]]], window_s: float, max_size: int) -> None:
        self.send = send
        self.window_s = window_s
        self.max_size = max_size
        self.batchers: dict[asyncio.AbstractEventLoop, _MicroBatcher[T, R]] = {}

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        batcher = self.batchers.get(loop)
        if batcher is None:
            forget_closed_loops(self.batchers)
            batcher = self.batchers[loop] = _MicroBatcher(loop, self.send, self.window_s, self.max_size)
        return await batcher.submit(item)


def _connect(
    urls: str | Sequence[str] | None,
    client: RewardClient | None,
    api_key: str | None,
    api_key_env: str | None,
    max_batch_size: int,
) -> tuple[RewardClient, bool]:
    """The client to use and whether this reward owns (and so closes) it."""
    if (urls is None) == (client is None):
        raise ValueError("pass exactly one of urls (a server URL or several) and client")
    if api_key is not None and api_key_env is not None:
        raise ValueError("pass api_key or api_key_env, not both")
    if client is not None:
        if api_key is not None or api_key_env is not None:
            raise ValueError("the client carries its own api_key; pass it to RewardClient")
        return client, False
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env) or None
        if api_key is None:
            raise ValueError(f"api_key_env={api_key_env!r}, but that environment variable is not set")
    assert urls is not None
    return RewardClient(urls, api_key=api_key, max_batch_size=max_batch_size), True


class _Remote:
    """What both remote reward kinds share: the client, its ownership, copy and pickle rules."""

    name: str

    def __init__(
        self,
        reward: str,
        urls: str | Sequence[str] | None = None,
        *,
        client: RewardClient | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        batch_window_s: float = 0.005,
        max_batch_size: int = 256,
        name: str | None = None,
    ) -> None:
        if not reward:
            raise ValueError("the remote reward name is empty")
        if batch_window_s < 0:
            raise ValueError(f"batch_window_s must be 0 or more, got {batch_window_s}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.remote_name = reward
        self.name = name or reward
        self.batch_window_s = batch_window_s
        self.max_batch_size = max_batch_size
        self.client, self._owns_client = _connect(urls, client, api_key, api_key_env, max_batch_size)
        self._batcher = self._make_batcher()

    async def aclose(self) -> None:
        """Close the client's connections on this loop, if this reward made the client."""
        if self._owns_client:
            await self.client.aclose()

    def __deepcopy__(self, memo: dict[int, object]) -> Any:
        """Copies share the client and its connections, so that gymnasium's re-make of an
        env built with `reward=` works."""
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_batcher"]  # futures and timers belong to this process's loops
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._batcher = self._make_batcher()

    def _make_batcher(self) -> _PerLoop[Any, Any]:
        return _PerLoop(self._send, self.batch_window_s, self.max_batch_size)

    async def _send(self, items: list[Any]) -> list[Any]:
        """Score the items of one micro-batch with one client call."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.remote_name!r}, {self.client.urls!r})"


class RemoteReward(_Remote, Reward):
    """A sample reward hosted by `rewardgym serve`, e.g. `RemoteReward("math", "http://host:8000")`.

    `urls` may list several servers hosting the same reward (they share the load and fail
    over); or pass a `client` to share one among rewards. `api_key_env` names the
    environment variable holding the server's bearer token.
    """

    async def _send(self, samples: list[Sample]) -> list[Score]:
        return await self.client.score(self.remote_name, samples)

    async def compute(self, sample: Sample) -> Score:
        return await self._batcher.submit(sample)

    async def score_batch(self, samples: Sequence[Sample]) -> list[Score]:
        """The whole batch as one call to the client; if it fails, every item says why."""
        try:
            return await self.client.score(self.remote_name, samples)
        except Exception as exc:
            return [Score.failure(f"{self.name}: {_describe(exc)}") for _ in samples]


class RemoteGroupReward(_Remote, GroupReward):
    """A group reward hosted by `rewardgym serve`; groups scored at about the same time on
    one event loop go out in one request."""

    async def _send(self, groups: list[Sequence[Sample]]) -> list[list[Score]]:
        return await self.client.score_group(self.remote_name, groups)

    async def compute_group(self, samples: Sequence[Sample]) -> list[Score]:
        return await self._batcher.submit(samples)


def remote_reward(
    reward: str, url: str | Sequence[str], api_key_env: str | None = None, group: bool = False
) -> RemoteReward | RemoteGroupReward:
    """A reward hosted by a reward server (`rewardgym serve`), scored over HTTP.

    `url` is one server's base URL, or several (a list, or comma-separated) that share the
    load and fail over; `api_key_env` names the environment variable with the bearer token;
    `group=True` for a group reward (all G samples of a prompt at once).
    """
    urls = [u.strip() for u in url.split(",") if u.strip()] if isinstance(url, str) else list(url)
    kind = RemoteGroupReward if group else RemoteReward
    return kind(reward, urls, api_key_env=api_key_env)

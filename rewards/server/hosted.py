"""A reward as the server hosts it: bounded admission, a concurrency cap, per-item and
per-request deadlines, and where it runs (the event loop or worker processes).

Admission is the back-pressure: a request is admitted whole or refused with `QueueFull`
(HTTP 429 with a Retry-After estimated from recent throughput), so a burst costs bounded
memory instead of an unbounded queue. Admitted items wait for one of `max_concurrency`
scoring slots; the wait is the queue depth `/metrics` reports.

Every score leaves here in plain Python numbers (`plain_score`), so one reward handing back
numpy types or an infinite value is an error on its item, not a response that cannot be
encoded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rewards.base import GroupReward, Reward
from rewards.server.executors import Executor
from rewards.server.metrics import ServerMetrics
from rewards.types import Sample, Score
from rewards.wire import plain_score

Kind = Literal["sample", "group"]


@dataclass(frozen=True)
class HostingLimits:
    """How much one hosted reward takes on. `item_timeout_s` bounds each sample (each
    group, for a group reward); None means no limit."""

    item_timeout_s: float | None = 60.0
    max_concurrency: int = 512
    max_queued: int = 8192
    max_batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.item_timeout_s is not None and not self.item_timeout_s > 0:
            raise ValueError(f"item_timeout_s must be positive or None, got {self.item_timeout_s}")
        for name in ("max_concurrency", "max_queued", "max_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class QueueFull(Exception):
    """The reward has `max_queued` items admitted already; come back in `retry_after_s`."""

    def __init__(self, reward: str, asked: int, admitted: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"reward {reward!r} is at capacity: {admitted} samples admitted, room for {limit}, "
            f"this request brings {asked}; retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


@dataclass
class _Throughput:
    """Items finished per second, smoothed, for Retry-After estimates."""

    rate: float = 0.0
    _count: int = 0
    _since: float = field(default_factory=time.monotonic)

    def add(self, n: int) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._since >= 0.5:
            current = self._count / (now - self._since)
            self.rate = current if self.rate == 0.0 else 0.7 * self.rate + 0.3 * current
            self._count, self._since = 0, now


class _RewardMetrics:
    """One reward's series (label lookups cost more than the updates, so do them once)."""

    def __init__(self, metrics: ServerMetrics, name: str) -> None:
        self.rejected = metrics.rejected.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.in_progress = metrics.in_progress.labels(name)
        self.items = metrics.items.labels(name)
        self.item_errors = metrics.item_errors.labels(name)


class HostedReward:
    """One name the server answers to. `reward` is kept for its description; `executor`
    does the scoring (inline in the event loop or in worker processes). `signature` is
    what the registered reward accepts (`describe_reward`'s parameters), None for what
    is not a registered reward (an environment's)."""

    def __init__(
        self,
        name: str,
        reward: Reward | GroupReward,
        executor: Executor,
        *,
        source: str,
        parameters: dict[str, Any] | None = None,
        signature: Mapping[str, str | None] | None = None,
        limits: HostingLimits | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.name = name
        self.reward = reward
        self.kind: Kind = "group" if isinstance(reward, GroupReward) else "sample"
        self.executor = executor
        self.source = source
        self.parameters = dict(parameters or {})
        self.signature = dict(signature) if signature is not None else None
        self.limits = limits or HostingLimits()
        self._slots = asyncio.Semaphore(self.limits.max_concurrency)
        self.admitted = 0  # items between admission and their answer
        self.running = 0
        self._throughput = _Throughput()
        self._metrics = _RewardMetrics(metrics, name) if metrics else None

    def describe(self) -> dict[str, Any]:
        doc = (self.reward.__doc__ or "").strip().split("\n\n")[0]
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": " ".join(doc.split()),
            "source": self.source,
            "parameters": self.parameters,
            "signature": self.signature,
            "requests": self.requests(),
            "executor": self.executor.kind,
            "item_timeout_s": self.limits.item_timeout_s,
            "max_batch_size": min(self.limits.max_batch_size, self.limits.max_queued),
            "max_queued": self.limits.max_queued,
        }

    def requests(self) -> dict[str, str]:
        """Each endpoint that scores this reward and the OpenAPI schema of its body."""
        group = {f"/v1/rewards/{self.name}:score_group": "#/components/schemas/GroupScoreRequest"}
        if self.kind == "group":
            return group
        return {f"/v1/rewards/{self.name}:score": "#/components/schemas/ScoreRequest", **group}

    # -- admission --------------------------------------------------------------------------

    def _admit(self, n: int) -> None:
        limit = self.limits.max_queued
        if self.admitted + n > limit:
            excess = self.admitted + n - limit
            rate = self._throughput.rate
            retry_after = min(30, max(1, math.ceil(excess / rate))) if rate > 0 else 1
            if self._metrics:
                self._metrics.rejected.inc(n)
            raise QueueFull(self.name, n, self.admitted, limit, retry_after)
        self.admitted += n
        if self._metrics:
            self._metrics.queue_depth.inc(n)

    def _release(self, n: int, errors: int) -> None:
        self.admitted -= n
        self._throughput.add(n)
        if self._metrics:
            self._metrics.items.inc(n)
            if errors:
                self._metrics.item_errors.inc(errors)

    async def _in_slot(self, job: Callable[[], Any], weight: int) -> Any:
        """Run `job()` in a scoring slot; the time before it gets one is queue time. The
        gauges count samples, so a job moves its `weight` (1, or a group's size) of them."""
        queued = True
        try:
            async with self._slots:
                queued = False
                self.running += 1
                if self._metrics:
                    self._metrics.queue_depth.dec(weight)
                    self._metrics.in_progress.inc(weight)
                try:
                    return await job()
                finally:
                    self.running -= 1
                    if self._metrics:
                        self._metrics.in_progress.dec(weight)
        finally:
            if queued and self._metrics:  # cancelled while waiting for a slot
                self._metrics.queue_depth.dec(weight)

    def _checked(self, score: Score) -> Score:
        try:
            return plain_score(score)
        except ValueError as exc:
            return Score.failure(f"{self.name}: {exc}")

    # -- scoring ----------------------------------------------------------------------------

    async def score(self, samples: Sequence[Sample], timeout_s: float | None = None) -> list[Score]:
        """Score a batch, each sample on its own; raises QueueFull before doing anything."""
        if self.kind == "group":
            raise TypeError(f"{self.name!r} is a group reward: score whole groups")
        self._admit(len(samples))
        scores: list[Score] = []
        try:
            jobs = [lambda s=s: self.executor.score(s) for s in samples]  # type: ignore[misc]
            done = await self._run_all(jobs, [1] * len(jobs), timeout_s, lambda i, e: Score.failure(e))
            scores = [self._checked(s) for s in done]
            return scores
        finally:
            self._release(len(samples), sum(1 for s in scores if s.error))

    async def score_groups(
        self, groups: Sequence[Sequence[Sample]], timeout_s: float | None = None
    ) -> list[list[Score]]:
        """Score groups. A sample reward scores each member on its own (one slot per
        sample); a group reward takes one slot per group."""
        if self.kind == "sample":
            flat = [sample for group in groups for sample in group]
            scores = iter(await self.score(flat, timeout_s))
            return [[next(scores) for _ in group] for group in groups]
        count = sum(len(group) for group in groups)
        self._admit(count)
        results: list[list[Score]] = []
        try:
            jobs = [lambda g=g: self.executor.score_group(g) for g in groups]  # type: ignore[misc]
            done = await self._run_all(
                jobs,
                [len(g) for g in groups],
                timeout_s,
                lambda i, error: [Score.failure(error)] * len(groups[i]),
            )
            results = [[self._checked(s) for s in group] for group in done]
            return results
        finally:
            self._release(count, sum(1 for group in results for s in group if s.error))

    async def _run_all(
        self,
        jobs: list[Callable[[], Any]],
        weights: list[int],
        timeout_s: float | None,
        on_deadline: Callable[[int, str], Any],
    ) -> list[Any]:
        """Run every job in a slot (job i holds `weights[i]` samples); job i unfinished at
        the request deadline answers `on_deadline(i, error)` instead."""
        tasks = [asyncio.ensure_future(self._in_slot(job, w)) for job, w in zip(jobs, weights, strict=True)]
        if timeout_s is None:
            return list(await asyncio.gather(*tasks))
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        error = f"{self.name}: the request deadline of {timeout_s:g} s passed before this item was scored"
        return [on_deadline(i, error) if task in pending else task.result() for i, task in enumerate(tasks)]

    def close(self) -> None:
        self.executor.close()

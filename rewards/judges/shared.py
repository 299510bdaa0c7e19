"""Judge clients shared by everyone who asks the same endpoint the same way, closed by the last.

A training run plays several groups at once, each of G environments. If every environment
built its own judge client there would be one HTTP connection pool and one cache handle per
environment, and `max_concurrency` would bound one environment, not the run. `SharedJudges`
hands out one client per endpoint setting (a `JudgeLease`), counts the leases, and closes the
client when the last one is released, so no client outlives its users and none is global
state that lives for the whole process.

Environments call `release()` from their synchronous `close()`, while the client's
connections belong to the event loop that used them; `close_client` closes it there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field

from rewards.judges.client import JudgeClient
from rewards.judges.config import JudgeConfig

_closing: set[asyncio.Task[None]] = set()  # closes in flight (a task nobody holds may be collected)


def close_client(client: JudgeClient, *, timeout_s: float = 30.0) -> None:
    """Close `client` from synchronous code, on the event loop its connections belong to.

    That loop running on another thread (the trainer's rollout thread): closed there, waited
    for. Running on this thread (called from async code): closed in a task. Idle: run on it.
    Gone or never used: closed on a fresh loop (connections of a closed loop need no goodbye).
    """
    loop = client.loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is not None and not loop.is_closed() and loop.is_running() and loop is not running:
        future = asyncio.run_coroutine_threadsafe(client.close(), loop)
        try:
            future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
        return
    if running is not None:
        task = running.create_task(client.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        return
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(client.close())
        return
    with contextlib.suppress(RuntimeError):  # connections of a closed loop: no goodbye needed
        asyncio.run(client.close())


@dataclass
class JudgeLease:
    """One holder's use of a shared client: `client` to ask, `release()` when done (once)."""

    client: JudgeClient
    key: Hashable
    pool: SharedJudges
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self)


@dataclass
class _Entry:
    client: JudgeClient
    holders: int = 0


@dataclass
class SharedJudges:
    """Judge clients by endpoint setting, each with a count of the leases on it."""

    _entries: dict[Hashable, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def key(config: JudgeConfig) -> Hashable:
        """What makes two clients interchangeable: where, who, and the limits on asking.

        Prompting settings (constitution, few-shot, ties, sampling) are per judge, not per
        client, so judges with different prompts still share one endpoint's connections."""
        return (
            config.base_url,
            config.model,
            config.api,
            config.api_key_env,
            config.timeout_s,
            config.max_attempts,
            config.max_concurrency,
            config.cache_dir,
        )

    def lease(self, config: JudgeConfig) -> JudgeLease:
        """The shared client for `config` (made on first use); release the lease when done."""
        key = self.key(config)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(config.client())
            entry.holders += 1
            return JudgeLease(entry.client, key, self)

    def release(self, lease: JudgeLease) -> None:
        """One holder fewer; the last one out closes the client."""
        with self._lock:
            entry = self._entries.get(lease.key)
            if entry is None or entry.client is not lease.client:
                return
            entry.holders -= 1
            if entry.holders > 0:
                return
            del self._entries[lease.key]
        close_client(entry.client)

    def holders(self, config: JudgeConfig) -> int:
        """How many leases the client for `config` has (0: none is open)."""
        with self._lock:
            entry = self._entries.get(self.key(config))
            return entry.holders if entry else 0


SHARED_JUDGES = SharedJudges()
"""The process's pool. It holds only clients someone has leased; each closes with its last lease."""

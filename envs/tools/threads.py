"""`ToolThreads`: the worker threads of one sync tool, which hung calls cannot starve or pin.

A sync tool runs in a thread, and Python cannot kill a thread: a call that hangs keeps
its thread for as long as it hangs. On a shared executor a few hung calls would hold
every worker, and every other tool's calls would then wait behind them (and time out
although they never ran); a non-daemon worker would also keep the process from exiting.
So each sync tool has threads of its own, daemon threads (the process exits even while
one is stuck), at most `size` of them. A call's time limit starts when a thread picks it
up, not while it waits for one. Once every thread is held by a call whose caller already
gave up on it (timed out, still running), the tool is stuck: new calls, and calls still
waiting for a thread, are refused at once instead of queueing behind calls that may
never end. A stuck call that ends after all frees its thread again. Threads start when
calls need them and end after `IDLE_EXIT_S` idle, so thousands of environments cost no
idle threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_NOT_STARTED = object()
IDLE_EXIT_S = 30.0  # an idle thread ends after this long (many environments, each with its tools)


class ToolStuck(Exception):
    """Every worker thread of the tool is held by an earlier call that timed out and still runs."""


class _Job:
    """One call: its function, and the caller's loop and futures (set from the worker thread)."""

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.started: asyncio.Future[bool] = loop.create_future()  # True: running; False: refused
        self.done: asyncio.Future[Any] = loop.create_future()
        self.running = False
        self.finished = False
        self.abandoned = False  # the caller stopped waiting
        self.stuck = False  # abandoned while running: counted against the pool

    def notify(
        self, future: asyncio.Future[Any], value: Any = _NOT_STARTED, error: BaseException | None = None
    ) -> None:
        """Resolve `future` on the caller's loop; nobody is waiting when that loop is closed."""

        def apply() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(apply)


class ToolThreads:
    """Up to `size` daemon threads running one tool's sync calls, in order of arrival."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"a tool needs at least one thread, got {size}")
        self.name = name
        self.size = size
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._queued = 0
        self._stuck = 0

    def __deepcopy__(self, memo: dict[int, object]) -> ToolThreads:
        """Threads are a shared resource: a copied tool (gymnasium re-making an env) shares them."""
        return self

    @property
    def stuck(self) -> int:
        """Calls given up on by their callers that still hold a thread."""
        return self._stuck

    async def run(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """`fn()` on a worker thread, within `timeout_s` from when a thread starts it.

        Raises TimeoutError past the limit (the call goes on in its thread, counted as
        stuck) and `ToolStuck` when every thread is held by stuck calls."""
        job = _Job(fn, asyncio.get_running_loop())
        self._submit(job)
        try:
            if not await job.started:
                raise ToolStuck(self._stuck_message())
            async with asyncio.timeout(timeout_s):
                return await job.done
        except BaseException:
            self._abandon(job)
            raise

    def _stuck_message(self) -> str:
        return (
            f"{self.name} is stuck: all {self.size} of its threads are still running earlier calls "
            "that timed out, so this call was not run"
        )

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._stuck >= self.size:
                job.started.set_result(False)
                return
            self._jobs.put(job)
            self._queued += 1
            if self._queued > self._idle and self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._work, name=f"tool-{self.name}", daemon=True).start()

    def _abandon(self, job: _Job) -> None:
        with self._lock:
            job.abandoned = True
            if not job.running or job.finished or job.stuck:
                return
            job.stuck = True
            self._stuck += 1
            if self._stuck < self.size:
                return
            waiting = []  # every thread is stuck: nothing queued would ever start
            while True:
                try:
                    waiting.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
                self._queued -= 1
        for other in waiting:
            other.notify(other.started, False)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._queued <= self._idle:  # nothing arrived meanwhile for this thread
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
                if job.abandoned:
                    continue
                job.running = True
            job.notify(job.started, True)
            try:
                value, error = job.fn(), None
            except BaseException as exc:  # handed to the caller, who decides what escapes
                value, error = None, exc
            with self._lock:
                job.finished = True
                if job.stuck:
                    self._stuck -= 1
            if error is not None:
                job.notify(job.done, error=error)
            else:
                job.notify(job.done, value)
            del job, value, error

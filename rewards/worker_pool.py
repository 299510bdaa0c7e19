"""Run CPU-bound reward code in worker processes, with a hard deadline on every call.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot kill one stuck call, and a
worker that dies breaks the whole pool. Here each worker process is owned by one handler
thread; a call that overruns its deadline gets its worker SIGKILLed and replaced, and a
worker that crashes (segfault, out of memory) fails only the call it was running.

Workers are plain `python -c` subprocesses (not multiprocessing's spawn or forkserver),
so they never re-import the caller's `__main__`: scripts need no `if __name__ ==
"__main__"` guard. Each worker warms up (imports, a first call) before it reports ready,
and the deadline clock starts only when a call is sent. A worker dies with its parent
(PR_SET_PDEATHSIG), so a hung one cannot outlive a killed run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

_STOP = object()
STARTUP_TIMEOUT_S = 120.0
_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


class WorkerTimeout(Exception):
    """The call did not finish within the deadline; its worker was killed."""


class WorkerCrashed(Exception):
    """The worker process died while running the call (crash or out of memory)."""


class WorkerError(Exception):
    """The function raised inside the worker; the message carries the original error."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that started it goes away."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the request took effect
            os._exit(1)


def _worker_main(fd: int) -> None:
    """Entry point inside a worker: set up, warm up, then answer calls until EOF."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    conn = Connection(fd)
    target, warmup_args, memory_limit_mb = conn.recv()
    module_name, _, qualname = target.partition(":")
    fn: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    if warmup_args is not None:
        with contextlib.suppress(Exception):  # warm-up only loads code; real calls report errors
            fn(*warmup_args)
    if memory_limit_mb:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(("ready", os.getpid()))
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return  # the parent went away
        try:
            conn.send(("ok", fn(*args)))
        except BaseException as exc:  # a MemoryError or RecursionError is an answer too
            try:
                conn.send(("error", f"{type(exc).__name__}: {exc}"[:2000]))
            except (OSError, MemoryError):
                return


def _qualified_name(fn: Callable[..., Any]) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ValueError(
            f"{fn!r} must be a module-level function importable by name "
            "(not a lambda, a closure, or a function defined in __main__)"
        )
    return f"{module}:{qualname}"


class _Worker:
    """One worker subprocess and its end of the socket."""

    def __init__(self, target: str, warmup_args: tuple[Any, ...] | None, memory_limit_mb: int | None):
        parent_sock, child_sock = socket.socketpair()
        # The worker imports exactly what the parent can, in the same order.
        code = (
            f"import sys; sys.path[:] = {sys.path!r}; "
            f"from rewards.worker_pool import _worker_main; _worker_main({child_sock.fileno()})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send((target, warmup_args, memory_limit_mb))
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise WorkerCrashed(f"a worker did not start within {STARTUP_TIMEOUT_S:g} s")
        status, _ = self.conn.recv()
        if status != "ready":
            self.kill()
            raise WorkerCrashed(f"a worker failed to start: {status}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int | None:
        if self.process.poll() is None:
            self.process.kill()
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.conn.close()
        return code


class WorkerPool:
    """Calls `fn(*args)` in `num_workers` processes; each call has a hard `timeout_s`.

    `fn` must be a module-level function, importable by name in a fresh interpreter.
    `warmup_args`, if given, are passed to `fn` once when a worker starts, so imports and
    caches are loaded before the first timed call. `memory_limit_mb` caps each worker's
    address space (RLIMIT_AS): going over shows up as a MemoryError answer or a crash of
    that one call. Workers start lazily, on the first call each handler thread takes.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        memory_limit_mb: int | None = 2048,
        warmup_args: tuple[Any, ...] | None = None,
        name: str = "worker-pool",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.target = _qualified_name(fn)
        self.num_workers = num_workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.warmup_args = warmup_args
        self.name = name
        self.restarts = 0  # workers replaced after a timeout or a crash
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(self.num_workers)
        ]
        for thread in self._threads:
            thread.start()
        _live_pools.add(self)

    # -- public API ---------------------------------------------------------------------

    def submit(self, *args: Any) -> Future[Any]:
        """Queue one call; the future fails with WorkerTimeout, WorkerCrashed or WorkerError."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future: Future[Any] = Future()
        self._jobs.put((future, args))
        return future

    async def run(self, *args: Any) -> Any:
        """Await one call from any event loop."""
        return await asyncio.wrap_future(self.submit(*args))

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if w.alive()]

    def close(self) -> None:
        """Stop the handler threads and kill the workers (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._jobs.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=15)
        with self._lock:
            leftovers, self._workers = self._workers, set()
        for worker in leftovers:
            worker.kill()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handler threads ------------------------------------------------------------------

    def _replace(self, worker: _Worker | None) -> int | None:
        code = None
        if worker is not None:
            code = worker.kill()
            with self._lock:
                self._workers.discard(worker)
                self.restarts += 1
        return code

    def _start_worker(self) -> _Worker:
        worker = _Worker(self.target, self.warmup_args, self.memory_limit_mb)
        with self._lock:
            self._workers.add(worker)
        return worker

    def _serve(self) -> None:
        worker: _Worker | None = None
        while True:
            job = self._jobs.get()
            if job is _STOP:
                break
            future, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                payload = pickle.dumps(args)
            except Exception as exc:
                future.set_exception(TypeError(f"arguments cannot be sent to a worker: {exc}"))
                continue
            try:
                if worker is None or not worker.alive():
                    if worker is not None:
                        self._replace(worker)
                    worker = self._start_worker()
                worker.conn.send_bytes(payload)
                if not worker.conn.poll(self.timeout_s):
                    self._replace(worker)
                    worker = None
                    future.set_exception(
                        WorkerTimeout(f"no answer within {self.timeout_s:g} s; the worker was killed")
                    )
                    continue
                status, result = worker.conn.recv()
            except (EOFError, OSError, WorkerCrashed) as exc:
                code = self._replace(worker)
                worker = None
                if isinstance(exc, WorkerCrashed):
                    future.set_exception(exc)
                    continue
                hint = " (SIGKILL: out of memory, or killed from outside)" if code == -9 else ""
                future.set_exception(WorkerCrashed(f"the worker died with exit code {code}{hint}"))
                continue
            if status == "ok":
                future.set_result(result)
            else:
                future.set_exception(WorkerError(result))
        if worker is not None:
            worker.kill()
            with self._lock:
                self._workers.discard(worker)


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_live_pools):
        pool.close()

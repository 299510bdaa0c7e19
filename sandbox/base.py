"""The sandbox contract: `await sandbox.run(request) -> RunResult`, never an exception for
anything the code did. Backends built on the supervisor share `SupervisorSandbox`, which
keeps a pool of warm supervisors (or starts one per run when `warm=False`)."""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from sandbox.languages import get_language
from sandbox.supervisor_link import (
    SupervisorProcess,
    build_payload,
    compile_limits,
    compiles,
    result_from_report,
)
from sandbox.types import RunRequest, RunResult, RunStatus, SandboxError


class Sandbox(ABC):
    """Runs untrusted code under hard limits.

    `run` is async and safe to call concurrently (runs beyond the backend's concurrency
    wait their turn); `run_sync` is the blocking twin. Failures of the code are results
    (status error/timeout/memory/output-limit); failures of the sandbox are results with
    status sandbox-error. Only a sandbox that cannot work at all raises (SandboxError, at
    construction). Close it, or use it as a context manager.
    """

    name: str = "sandbox"
    max_concurrency: int = 1

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @abstractmethod
    def run_sync(self, request: RunRequest) -> RunResult: ...

    async def run(self, request: RunRequest) -> RunResult:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(4, 2 * self.max_concurrency), thread_name_prefix=f"{self.name}-run"
                )
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run_sync, request)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __deepcopy__(self, memo: dict[int, object]) -> Sandbox:
        """A sandbox is a shared resource (processes, cgroups): copies share it, so that
        gymnasium's re-make of an env built with `sandbox=` works."""
        return self

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SupervisorPool:
    """Idle supervisors ready for the next run, at most `size` alive at once. One found dead
    when its turn comes is replaced."""

    def __init__(self, spawn: Any, size: int) -> None:
        self._spawn = spawn
        self.size = size
        self._idle: list[Any] = []
        self._alive = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self) -> Any:
        dead: list[Any] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise SandboxError("the sandbox is closed")
                    if self._idle:
                        item = self._idle.pop()
                        if item.alive():
                            return item
                        self._alive -= 1  # died while idle (killed from outside): start another
                        dead.append(item)
                        continue
                    if self._alive < self.size:
                        self._alive += 1
                        break
                    self._cond.wait()
        finally:
            for item in dead:
                item.close()
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._alive -= 1
                self._cond.notify()
            raise

    def release(self, item: Any, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(item)
            else:
                self._alive -= 1
                item.close()
            self._cond.notify()

    def idle(self) -> list[Any]:
        """A snapshot of the idle items (for health checks; do not run on them)."""
        with self._cond:
            return list(self._idle)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            self._cond.notify_all()
        for item in idle:
            item.close()


class SupervisorSandbox(Sandbox):
    """A backend whose runs go through the supervisor. Subclasses say how to start one
    (`_start_supervisor`) and may adjust the payload and result (`_before_run`, `_after_run`).

    Warm: a pool of long-lived supervisors, each forking a fresh isolated child per run.
    Cold: a new supervisor per run, sized for that run, closed in the background after
    its report is in (the caller does not wait for the teardown)."""

    workdir: str = "/work"
    memory_cgroup: bool = False  # a cgroup memory limit holds every run (and its kills are reported)

    def __init__(self, *, warm: bool, pool_size: int) -> None:
        super().__init__()
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.warm = warm
        self.max_concurrency = pool_size
        # Warm supervisors start on threads of our own, which live as long as the sandbox:
        # bubblewrap's --die-with-parent kills a sandbox when the *thread* that started it
        # exits, and callers of run_sync may run on short-lived threads.
        self._spawner = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix=f"{self.name}-start")
        self._pool = SupervisorPool(self._start_warm, pool_size)
        self._cold_slots = threading.BoundedSemaphore(pool_size)
        self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-close")
        self._closed = False
        self.runs_started = 0

    def _start_warm(self) -> SupervisorProcess:
        return self._spawner.submit(self._start_supervisor, None).result()

    @abstractmethod
    def _start_supervisor(self, request: RunRequest | None) -> SupervisorProcess:
        """A ready supervisor: for `request` alone (cold), or for any run (warm, request None)."""

    @abstractmethod
    def _env(self) -> dict[str, str]: ...

    def _probe(self) -> None:
        """Start one supervisor now, so a sandbox that cannot work refuses at construction."""
        if self.warm:
            self._pool.release(self._pool.acquire(), healthy=True)
        else:
            self._start_supervisor(None).close()

    def _before_run(self, process: SupervisorProcess, request: RunRequest) -> None:
        """Hook: e.g. set this run's cgroup limits."""

    def _after_run(self, process: SupervisorProcess, request: RunRequest, result: RunResult) -> RunResult:
        """Hook: e.g. turn a kill by the cgroup memory limit into status memory."""
        return result

    def _checkout(self, request: RunRequest) -> SupervisorProcess:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if self.warm:
            return self._pool.acquire()
        self._cold_slots.acquire()
        try:
            return self._start_supervisor(request)
        except BaseException:
            self._cold_slots.release()
            raise

    def _checkin(self, process: SupervisorProcess, healthy: bool) -> None:
        if self.warm:
            self._pool.release(process, healthy)
            return
        self._cold_slots.release()
        self._closer.submit(self._close_cold, process)

    def _close_cold(self, process: SupervisorProcess) -> None:
        """Runs on the closer thread, off the caller's path."""
        process.close(grace_s=2.0)

    def wait_for_cleanup(self) -> None:
        """Block until every cold supervisor handed to the closer is gone."""
        self._closer.submit(lambda: None).result()

    def run_sync(self, request: RunRequest) -> RunResult:
        started = time.perf_counter()
        try:
            if self.memory_cgroup and compiles(request):
                return self._compile_then_run(request)
            payload = build_payload(
                request, workdir=self.workdir, env=self._env(), memory_cgroup=self.memory_cgroup
            )
        except ValueError as exc:
            return RunResult.sandbox_error(str(exc))
        try:
            process = self._checkout(request)
        except SandboxError as exc:
            return RunResult.sandbox_error(str(exc), time.perf_counter() - started)
        healthy = False
        try:
            self.runs_started += 1
            self._before_run(process, request)
            report = process.call(payload)
            result = result_from_report(report, time.perf_counter() - started)
            result = self._after_run(process, request, result)
            healthy = process.alive() and result.status is not RunStatus.SANDBOX_ERROR
            return result
        except SandboxError as exc:
            return RunResult.sandbox_error(str(exc), time.perf_counter() - started)
        finally:
            self._checkin(process, healthy)

    def _compile_then_run(self, request: RunRequest) -> RunResult:
        """A compiled language where a cgroup memory limit holds: the compiler and the program
        are two runs, each under its own cgroup limit (the compiler's larger, the program's
        the request's), so that a program past its memory is killed by the cgroup and
        reported as memory. The binary goes from the first run to the second."""
        language = get_language(request.language)
        missing = language.missing_tools()
        if missing:
            return RunResult.sandbox_error(
                f"language {language.name!r} needs {', '.join(missing)}, not found on this host"
            )
        assert language.compile_argv is not None and language.run_argv is not None
        binary = language.run_argv[0].removeprefix("./")
        files = {**request.files, language.source_file: (request.code or "").encode()}
        compiled = self.run_sync(
            RunRequest(
                command=language.compile_argv, files=files, env=request.env,
                limits=compile_limits(request), fetch_files=(binary,),
            )
        )  # fmt: skip
        if compiled.status is RunStatus.SANDBOX_ERROR:
            return compiled
        program = compiled.files.get(binary)
        compiled = replace(compiled, files={})
        if compiled.status is not RunStatus.OK or program is None:
            return replace(
                compiled,
                status=compiled.status if compiled.status is not RunStatus.OK else RunStatus.ERROR,
                message=f"compilation failed: {compiled.message or 'no program came out'}",
                compile=compiled,
            )
        run = self.run_sync(
            RunRequest(
                command=(*language.run_argv, *request.args), files={**files, binary: program},
                stdin=request.stdin, env=request.env, limits=request.limits, fetch_files=request.fetch_files,
            )
        )  # fmt: skip
        return replace(run, compile=compiled)

    def close(self) -> None:
        self._closed = True
        self._pool.close()
        self._spawner.shutdown(wait=True)
        self._closer.shutdown(wait=True)
        super().close()

"""The docker backend: every run in a fresh container, through the same supervisor.

Where bubblewrap is missing (macOS hosts, locked-down kernels) or a stronger runtime is
wanted (gVisor's `runsc` through `extra_options={"runtime": "runsc"}`), a container is the
wall: no network, a read-only root with size-limited tmpfs at /work and /tmp, all
capabilities dropped, no-new-privileges, an unprivileged uid of its own, memory/swap,
pids and CPU limits, and nofile/fsize/core ulimits. No host environment goes in.

Inside, the supervisor runs as the container's PID 1 in its "cold" mode (the one
bubblewrap's cold runs use: the wrapper made fresh namespaces and tmpfs dirs for this run
alone, the supervisor is the run's init), with stdin and stdout as its channel
(`docker_attach.py`). So limits and statuses are computed by the same code as the local
backends. Docker's default seccomp profile forbids the nested unshare/mount of the warm
mode, so no container is reused: create, start, run, remove (the removal happens in the
background, after the result is back). Past the run's deadline the host kills the
container.

Needs the `docker` Python package and an engine; construction raises SandboxError when
either is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from sandbox.base import Sandbox
from sandbox.docker_attach import AttachChannel, start_supervisor
from sandbox.languages import get_language
from sandbox.supervisor import BOOTSTRAP
from sandbox.supervisor_link import (
    COMPILE_MEMORY_MB,
    DEADLINE_GRACE_S,
    WORKDIR,
    base_env,
    build_payload,
    compiles,
    payload_deadline,
    result_from_report,
)
from sandbox.types import RunRequest, RunResult, RunStatus, SandboxError

logger = logging.getLogger(__name__)
MIB = 1 << 20
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
SUPERVISOR_CONFIG = {"mode": "cold", "one_shot": True, "site_packages": True, "sys_path": [], "preload": []}
SUPERVISOR_PROCESSES = 2  # the supervisor (PID 1) and one spare, on top of the run's own
RUN_MEMORY_OVERHEAD_MB = 96  # the supervisor's own share of the container's memory
# The compile step's own limits, as `build_payload` sets them: the container's hard limits
# must leave room for them, since the supervisor can lower a hard limit but never raise one.
COMPILE_MIN_PROCESSES = 32
COMPILE_MIN_FILE_BYTES = 256 << 20
COMPILE_MIN_OPEN_FILES = 256
LABEL = "rewardgym.sandbox"
# Tuning that cannot weaken the walls; everything else in the spec is fixed.
EXTRA_OPTIONS = frozenset({
    "runtime", "cpuset_cpus", "cpuset_mems", "cpu_shares", "cpu_period", "cpu_quota",
    "mem_reservation", "oom_score_adj", "blkio_weight", "storage_opt", "platform",
})  # fmt: skip


@dataclass(frozen=True)
class DockerConfig:
    """`image` must have Python 3.9+ as `python` (and gcc/g++ for C and C++: the default,
    the full Debian Python image, has them; a `-slim` image is smaller but runs Python and
    bash only). `pool_size`: containers running at once (runs beyond it wait). `base_url`:
    the engine (None: DOCKER_HOST, else the local socket). `first_uid`: containers run as
    uids first_uid, first_uid + 1, ... (gid the same), one per concurrent container, so a
    per-user limit (RLIMIT_NPROC) never counts another run's processes; pick a range no
    host user has. `cpus`: CPU share of each container. `pull`: pull a missing image at
    construction. `extra_options`: more `containers.create` arguments, from EXTRA_OPTIONS
    only (e.g. runtime="runsc")."""

    image: str = "python:3.11-bookworm"
    pool_size: int = 4
    base_url: str | None = None
    python: str = "python3"
    first_uid: int = 61000
    cpus: float = 1.0
    pull: bool = True
    startup_timeout_s: float = 30.0
    api_timeout_s: float = 60.0
    extra_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_options", MappingProxyType(dict(self.extra_options)))
        if self.pool_size < 1:
            raise ValueError(f"DockerConfig.pool_size must be at least 1, got {self.pool_size}")
        if self.cpus <= 0 or self.startup_timeout_s <= 0 or self.api_timeout_s <= 0:
            raise ValueError("DockerConfig.cpus, startup_timeout_s and api_timeout_s must be positive")
        if not 1 <= self.first_uid <= 65535 - 2 * self.pool_size:
            raise ValueError(
                f"DockerConfig.first_uid must be at least 1 and leave room for 2 * pool_size uids below "
                f"65536, got {self.first_uid} with pool_size {self.pool_size}"
            )
        unknown = sorted(set(self.extra_options) - EXTRA_OPTIONS)
        if unknown:
            raise ValueError(
                f"DockerConfig.extra_options may not set {unknown}: the sandbox fixes them or they would "
                f"weaken its walls; allowed: {', '.join(sorted(EXTRA_OPTIONS))}"
            )


def container_spec(request: RunRequest, config: DockerConfig, uid: int | None = None) -> dict[str, Any]:
    """The `containers.create` arguments for one run: the walls and the limits. `uid`: the
    user to run as (default `config.first_uid`)."""
    limits = request.limits
    memory_mb = limits.memory_mb + 3 * limits.disk_mb + RUN_MEMORY_OVERHEAD_MB  # tmpfs pages count too
    processes, file_bytes, open_files = limits.max_processes, limits.max_file_bytes, limits.max_open_files
    if request.command is None and get_language(request.language).compile_argv is not None:
        memory_mb = max(memory_mb, COMPILE_MEMORY_MB + 3 * limits.disk_mb + RUN_MEMORY_OVERHEAD_MB)
        processes = max(processes, COMPILE_MIN_PROCESSES)
        file_bytes = max(file_bytes, COMPILE_MIN_FILE_BYTES)
        open_files = max(open_files, COMPILE_MIN_OPEN_FILES)
    uid = config.first_uid if uid is None else uid
    # docker's tmpfs default is noexec. No working_dir: docker would create it 0755 over the
    # tmpfs's 1777, and the supervisor changes into the work dir for the program anyway.
    tmpfs = f"rw,exec,nosuid,nodev,size={limits.disk_mb}m,mode=1777"
    return {
        "image": config.image,
        "command": [config.python, "-I", "-S", "-B", "-c", BOOTSTRAP, "0", "1"],
        "user": f"{uid}:{uid}",
        "hostname": "sandbox",
        "environment": {},  # nothing of the host's; the program's own comes with the run
        "labels": {LABEL: "run"},
        "stdin_open": True,
        "tty": False,
        "network_mode": "none",
        "mem_limit": memory_mb * MIB,
        "memswap_limit": memory_mb * MIB,  # equal: no swap
        "pids_limit": processes + SUPERVISOR_PROCESSES,
        "nano_cpus": int(config.cpus * 1e9),
        "read_only": True,
        "tmpfs": {WORKDIR: tmpfs, "/tmp": tmpfs},
        "shm_size": limits.disk_mb * MIB,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "ulimits": [
            {"name": "nofile", "soft": open_files, "hard": open_files},
            {"name": "fsize", "soft": file_bytes, "hard": file_bytes},
            {"name": "core", "soft": 0, "hard": 0},
        ],
        "log_config": {"type": "none", "config": {}},  # the channel is not a log
        "init": False,  # the supervisor is PID 1: nothing in the run can kill it
        "auto_remove": False,  # removed by us, after reading its state
        **config.extra_options,
    }


def report_limit(request: RunRequest) -> int:
    """The largest report a run can honestly produce: compile and run output, fetched files,
    base64's growth, and room for the rest."""
    limits = request.limits
    raw = 4 * limits.max_output_bytes + len(request.fetch_files) * limits.max_file_bytes
    return raw * 4 // 3 + MIB


class _Container:
    """One container running the supervisor, created and started for one run."""

    def __init__(self, container: Any, uid: int, created_at: float) -> None:
        self.container = container
        self.uid = uid
        self.created_at = created_at
        self.channel: AttachChannel | None = None
        self.python_version = ""

    def oom_killed(self, client: Any) -> bool:
        """Whether the kernel's OOM killer struck in this container. The engine's "oom" event
        says so while the container runs (State.OOMKilled waits for its exit, and only
        counts PID 1)."""
        with contextlib.suppress(Exception):  # events we cannot read tell nothing either way
            events = client.events(
                since=f"{self.created_at:.6f}",
                until=f"{time.time():.6f}",
                filters={"container": self.container.id, "event": "oom"},
                decode=True,
            )
            try:
                return any(True for _ in events)
            finally:
                events.close()
        return False

    def remove(self) -> None:
        """Kill and remove."""
        if self.channel is not None:
            self.channel.close()
        try:
            self.container.remove(force=True)
        except Exception as exc:  # already gone, or the engine is: nothing more to do here
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                logger.warning("could not remove sandbox container %s: %s", self.container.id[:12], exc)


def _raw_socket(handle: Any) -> socket.socket:
    """docker-py's attach handle is a socket.SocketIO over the engine connection (unix or tcp),
    or the socket itself (TLS); npipe and ssh endpoints give other things, not supported."""
    sock = getattr(handle, "_sock", handle)
    if not isinstance(sock, socket.socket):
        raise SandboxError(
            f"the docker backend needs a unix or tcp engine endpoint, not {type(handle).__name__}"
        )
    return sock


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return ()


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, config: DockerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DockerConfig()
        try:
            import docker
        except ImportError:
            raise SandboxError(
                "the docker backend needs the Python package 'docker' (pip install 'docker>=7')"
            ) from None
        self._errors = docker.errors
        where = config.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        try:
            if config.base_url is None:
                client = docker.from_env(timeout=int(config.api_timeout_s))
            else:
                client = docker.DockerClient(base_url=config.base_url, timeout=int(config.api_timeout_s))
            client.ping()
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
            raise SandboxError(
                f"no Docker engine answers at {where} ({exc}); start one, point DOCKER_HOST or "
                f"base_url at it, or use the bubblewrap backend"
            ) from None
        self.client = client
        self.max_concurrency = config.pool_size
        self._slots = threading.BoundedSemaphore(config.pool_size)
        # Twice as many uids as slots: a container being removed in the background keeps its own.
        self._uids: queue.Queue[int] = queue.Queue()
        for uid in range(config.first_uid, config.first_uid + 2 * config.pool_size):
            self._uids.put(uid)
        self._remover = ThreadPoolExecutor(max_workers=2, thread_name_prefix="docker-remove")
        self._lock = threading.Lock()
        self._live: set[_Container] = set()
        self._closed = False
        try:
            self._ensure_image()
            # Start one now: an image that cannot run the supervisor refuses here, with its reason.
            probe = self._start(RunRequest(code=""))
            self._discard(probe, background=False)
        except BaseException:
            self._remover.shutdown(wait=True)
            client.close()
            raise
        self.python_version = probe.python_version
        if _version(self.python_version) < (3, 9):
            self.close()
            raise SandboxError(f"{config.image} has Python {self.python_version!r}; the sandbox needs 3.9+")

    @property
    def isolation(self) -> str:
        runtime = self.config.extra_options.get("runtime", "the engine's default runtime")
        return f"a fresh container per run ({self.config.image}, {runtime}; no network, read-only root)"

    def _ensure_image(self) -> None:
        image = self.config.image
        try:
            self.client.images.get(image)
            return
        except self._errors.ImageNotFound:
            if not self.config.pull:
                raise SandboxError(
                    f"image {image} is not on the Docker engine: docker pull {image}"
                ) from None
        except self._errors.DockerException as exc:
            raise SandboxError(f"cannot look up image {image}: {exc}") from None
        logger.info("pulling %s for the docker sandbox", image)
        try:
            self.client.images.pull(image)
        except self._errors.DockerException as exc:
            raise SandboxError(f"cannot pull {image}: {exc}") from None

    def _start(self, request: RunRequest) -> _Container:
        """Create, attach, start, and take the supervisor through its handshake."""
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox is closed")
        try:
            uid = self._uids.get(timeout=self.config.startup_timeout_s)
        except queue.Empty:
            raise SandboxError("no uid is free: finished containers are not being removed") from None
        created_at = time.time() - 1.0  # the engine's clock may lag ours a little
        try:
            created = self.client.containers.create(**container_spec(request, self.config, uid))
        except self._errors.DockerException as exc:
            self._uids.put(uid)
            raise SandboxError(f"docker could not create the container: {exc}") from None
        container = _Container(created, uid, created_at)
        with self._lock:
            self._live.add(container)
        try:
            params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            handle = created.attach_socket(params=params)  # before start: nothing is missed
            container.channel = AttachChannel(_raw_socket(handle), keep_alive=handle)
            created.start()
            deadline = time.monotonic() + self.config.startup_timeout_s
            hello = start_supervisor(container.channel, SUPERVISOR_CONFIG, deadline)
        except (self._errors.DockerException, OSError, SandboxError) as exc:
            self._discard(container, background=False)
            message = str(exc) if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
            raise SandboxError(f"the sandbox container did not start: {message}") from None
        container.python_version = str(hello.get("python", ""))
        return container

    def _discard(self, container: _Container, background: bool = True) -> None:
        """Remove the container once (close() and the run's own cleanup may both ask)."""
        with self._lock:
            if container not in self._live:
                return
            self._live.discard(container)

        def remove() -> None:
            container.remove()
            self._uids.put(container.uid)

        if background:
            try:
                self._remover.submit(remove)
                return
            except RuntimeError:  # closing: the remover takes no more work
                pass
        remove()

    def run_sync(self, request: RunRequest) -> RunResult:
        started = time.perf_counter()
        try:
            payload = build_payload(
                request,
                workdir=WORKDIR,
                env=base_env(None),
                check_tools=False,
                memory_cgroup=not compiles(request),  # a compiling run's container has the compiler's limit
            )
        except ValueError as exc:
            return RunResult.sandbox_error(str(exc))
        with self._slots:
            try:
                container = self._start(request)
            except SandboxError as exc:
                return RunResult.sandbox_error(str(exc), time.perf_counter() - started)
            try:
                return self._call(container, request, payload, started)
            finally:
                self._discard(container)  # also the wall-clock kill: a stuck run dies with its container

    def _call(
        self, container: _Container, request: RunRequest, payload: dict[str, Any], started: float
    ) -> RunResult:
        assert container.channel is not None
        deadline = time.monotonic() + payload_deadline(request) + DEADLINE_GRACE_S
        try:
            container.channel.send(payload, deadline)
            report = container.channel.recv(deadline, report_limit(request))
        except OSError as exc:  # TimeoutError included
            message = f"the sandbox container stopped answering ({type(exc).__name__}); it was killed"
            return RunResult.sandbox_error(message, time.perf_counter() - started)
        except SandboxError as exc:
            return RunResult.sandbox_error(str(exc), time.perf_counter() - started)
        if report is None:
            detail = "the sandbox was closed" if self._closed else container.channel.stderr_text()
            result = RunResult.sandbox_error(f"the sandbox container exited mid-run: {detail or 'no reason'}")
        else:
            result = result_from_report(report, time.perf_counter() - started)
        if result.status in (RunStatus.ERROR, RunStatus.SANDBOX_ERROR) and container.oom_killed(self.client):
            message = (
                f"killed by the container's memory limit ({request.limits.memory_mb} MiB plus its tmpfs)"
            )
            result = replace(result, status=RunStatus.MEMORY, message=message)
        return result

    def close(self) -> None:
        """Kill every container still running, wait for the removals, close the client."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = list(self._live)
        for container in live:
            self._discard(container)
        self._remover.shutdown(wait=True)
        self.client.close()
        super().close()

"""The sandbox's data: what a run asks for (`RunRequest`, `Limits`) and what it gets back (`RunResult`).

Every backend speaks these types, so the code environment, the python tool and the
SandboxFusion endpoint never care which isolation runs the code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


class RunStatus(enum.StrEnum):
    """How a run ended. Exactly one applies; the order of checks is sandbox-error, timeout,
    memory, output-limit, then ok/error by exit code."""

    OK = "ok"  # exited with status 0
    ERROR = "error"  # non-zero exit, a signal, or a failed compile
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit hit
    MEMORY = "memory"  # memory limit hit (MemoryError or killed by the memory limit)
    OUTPUT_LIMIT = "output-limit"  # stdout or stderr went past max_output_bytes; the run was stopped
    SANDBOX_ERROR = "sandbox-error"  # the sandbox itself failed; says nothing about the code


class SandboxError(RuntimeError):
    """The sandbox cannot run anything: not installed, not isolated, misconfigured."""


@dataclass(frozen=True)
class Limits:
    """Hard limits for one run. Sizes in bytes or MiB as named; times in seconds.

    `cpu_time_s` defaults to the wall limit. `memory_mb` bounds, where cgroups are writable,
    the resident memory of the whole run (plus its tmpfs pages and a margin), and the address
    space of each Python process; where no cgroup holds, the address space of every process.
    `max_processes` bounds processes and threads alive at once. `disk_mb` is the size of
    each private tmpfs (/work, /tmp, /dev/shm); `max_file_bytes` caps any single file.
    """

    wall_time_s: float = 10.0
    cpu_time_s: float | None = None
    memory_mb: int = 512
    max_processes: int = 64
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    disk_mb: int = 64
    max_open_files: int = 256

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "memory_mb", "max_processes", "max_output_bytes", "max_file_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.cpu_time_s is not None and self.cpu_time_s <= 0:
            raise ValueError(f"Limits.cpu_time_s must be positive, got {self.cpu_time_s!r}")
        if self.disk_mb <= 0 or self.max_open_files < 16:
            raise ValueError("Limits.disk_mb must be positive and max_open_files at least 16")

    @property
    def effective_cpu_time_s(self) -> float:
        return self.cpu_time_s if self.cpu_time_s is not None else self.wall_time_s

    def to_json(self) -> dict[str, float | int]:
        return {
            "wall_time_s": self.wall_time_s,
            "cpu_time_s": self.effective_cpu_time_s,
            "memory_mb": self.memory_mb,
            "max_processes": self.max_processes,
            "max_output_bytes": self.max_output_bytes,
            "max_file_bytes": self.max_file_bytes,
            "disk_mb": self.disk_mb,
            "max_open_files": self.max_open_files,
        }


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class RunRequest:
    """One program to run.

    Give `code` and a `language` ("python", "bash", "c", "cpp"): the code is written to
    the language's main file, compiled if needed, and run. Or give `command` (an argv run
    in the work dir) together with `files`. `files` maps relative paths in the work dir to
    their bytes; `fetch_files` names work-dir files to bring back. `env` is the whole
    environment of the program: nothing of the host's leaks in.
    """

    code: str | None = None
    language: str = "python"
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    files: Mapping[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    fetch_files: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    compile_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", _frozen(self.files))
        object.__setattr__(self, "env", _frozen(self.env))
        if self.command is not None:
            object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "fetch_files", tuple(self.fetch_files))
        if isinstance(self.stdin, str):
            object.__setattr__(self, "stdin", self.stdin.encode())
        if self.code is None and not self.command:
            raise ValueError("RunRequest needs `code` or a `command`")
        for path in [*self.files, *self.fetch_files]:
            check_relative_path(path)
        for value in self.files.values():
            if not isinstance(value, bytes | bytearray):
                raise TypeError(f"RunRequest.files values must be bytes, got {type(value).__name__}")

    def with_limits(self, **changes: float | int | None) -> RunRequest:
        return replace(self, limits=replace(self.limits, **changes))


def check_relative_path(path: str) -> str:
    """Work-dir paths must be relative and stay inside the work dir."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"file path {path!r} must be relative to the work dir, with no empty, '.' or '..' part"
        )
    return path


@dataclass(frozen=True)
class RunResult:
    """What happened. `stdout`/`stderr` are decoded as UTF-8 (invalid bytes replaced) and
    capped at `Limits.max_output_bytes`; the `*_truncated` flags say when bytes were cut.
    `files` holds the fetched files that existed (missing ones are absent). `compile` is
    the compile step's own result for compiled languages. `message` explains any status
    other than ok in one line."""

    status: RunStatus
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    files: Mapping[str, bytes] = field(default_factory=dict)
    message: str = ""
    compile: RunResult | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))
        object.__setattr__(self, "files", _frozen(self.files))

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.OK

    @classmethod
    def sandbox_error(cls, message: str, wall_time_s: float = 0.0) -> RunResult:
        return cls(status=RunStatus.SANDBOX_ERROR, message=message, wall_time_s=wall_time_s)

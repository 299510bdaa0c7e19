"""The host's side of the supervisor: start one, send it runs, turn its reports into results.

Backends differ only in *how* the supervisor is started (inside bubblewrap, in a docker
container, or bare for the explicit unsafe opt-in); the payload and the report are the
same everywhere, so every backend enforces the same limits in the same code.
"""

from __future__ import annotations

import base64
import contextlib
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from sandbox.languages import get_language
from sandbox.supervisor import BOOTSTRAP, recv_message, send_message
from sandbox.types import Limits, RunRequest, RunResult, RunStatus, SandboxError

WORKDIR = "/work"
PRIVATE_DIRS = ("/work", "/tmp", "/dev/shm")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
COMPILE_MEMORY_MB = 2048
DEADLINE_GRACE_S = 5.0


@cache
def supervisor_source() -> str:
    return resources.files("sandbox").joinpath("supervisor.py").read_text()


@cache
def supervisor_code_marshalled(version: str) -> bytes:
    """What the bootstrap execs: our compiled code object when the sandbox runs this very
    Python version (no compile per cold start), else the source."""
    source = supervisor_source()
    if version == "{}.{}".format(*sys.version_info[:2]):
        return marshal.dumps(compile(source, "sandbox/supervisor.py", "exec"))
    return marshal.dumps(source)


def base_env(python_bin_dir: str | None, workdir: str = WORKDIR) -> dict[str, str]:
    path = f"{python_bin_dir}:{DEFAULT_PATH}" if python_bin_dir else DEFAULT_PATH
    return {
        "PATH": path,
        "HOME": workdir,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # glibc reserves 64 MiB of address space per malloc arena (one per thread): under the
        # per-process address-space limit, threads would fail long before memory ran out.
        "MALLOC_ARENA_MAX": "2",
    }


def build_payload(
    request: RunRequest,
    *,
    workdir: str,
    env: dict[str, str],
    check_tools: bool = True,
    memory_cgroup: bool = False,
) -> dict[str, Any]:
    """What the supervisor runs. Raises ValueError for a request no backend can run.
    `check_tools`: refuse a language whose compiler is missing on this host (off where the
    tools live elsewhere, e.g. in a docker image). `memory_cgroup`: the backend holds the run
    to a cgroup memory limit and reports its kills as status memory, so exec'd programs get
    no address-space limit (else a C program's malloc fails first, and it ends as an error)."""
    limits = request.limits
    files = {path: base64.b64encode(bytes(data)).decode() for path, data in request.files.items()}
    stdin = base64.b64encode(request.stdin).decode()
    compile_step = None
    if request.command:
        run: dict[str, Any] = {"argv": [*request.command, *request.args], "stdin": stdin}
        if request.code is not None:
            files.setdefault(get_language(request.language).source_file, _b64(request.code))
    else:
        language = get_language(request.language)
        missing = language.missing_tools() if check_tools else []
        if missing:
            raise ValueError(f"language {language.name!r} needs {', '.join(missing)}, not found on this host")
        files[language.source_file] = _b64(request.code or "")
        if language.run_argv is None:
            run = {"python": language.source_file, "args": list(request.args), "stdin": stdin}
        else:
            run = {"argv": [*language.run_argv, *request.args], "stdin": stdin}
        if language.compile_argv is not None:
            compile_step = {
                "argv": list(language.compile_argv),
                "stdin": "",
                "limits": compile_limits(request).to_json(),
            }
    return {
        "workdir": workdir,
        "private_dirs": list(PRIVATE_DIRS),
        "files": files,
        "env": {**env, **request.env},
        "limits": limits.to_json(),
        "fetch": list(request.fetch_files),
        "compile": compile_step,
        "run": run,
        "deadline_s": payload_deadline(request),
        "memory_cgroup": memory_cgroup,
    }


def compile_limits(request: RunRequest) -> Limits:
    """The compile step's limits: compilers need room that the program may not have."""
    limits = request.limits
    return Limits(
        wall_time_s=request.compile_timeout_s,
        memory_mb=max(limits.memory_mb, COMPILE_MEMORY_MB),
        max_processes=max(limits.max_processes, 32),
        max_output_bytes=limits.max_output_bytes,
        max_file_bytes=max(limits.max_file_bytes, 256 << 20),
        disk_mb=limits.disk_mb,
        max_open_files=max(limits.max_open_files, 256),
    )


def compiles(request: RunRequest) -> bool:
    """Whether the request has a compile step (a compiled language, not a command)."""
    return request.command is None and get_language(request.language).compile_argv is not None


def payload_deadline(request: RunRequest) -> float:
    compile_time = request.compile_timeout_s if compiles(request) else 0
    return request.limits.wall_time_s + compile_time + DEADLINE_GRACE_S


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _step_result(step: dict[str, Any]) -> RunResult:
    return RunResult(
        status=RunStatus(step["status"]),
        exit_code=step["exit_code"],
        signal=step["signal"],
        stdout=base64.b64decode(step["stdout"]).decode("utf-8", "replace"),
        stderr=base64.b64decode(step["stderr"]).decode("utf-8", "replace"),
        stdout_truncated=step["stdout_truncated"],
        stderr_truncated=step["stderr_truncated"],
        wall_time_s=step["wall_time_s"],
        cpu_time_s=step["cpu_time_s"],
        peak_memory_mb=step["peak_memory_kb"] / 1024,
        message=step["message"],
    )


def result_from_report(report: dict[str, Any], wall_time_s: float) -> RunResult:
    status = report.get("status")
    if status == "sandbox-error":
        return RunResult.sandbox_error(report.get("message", "unknown sandbox failure"), wall_time_s)
    compiled = _step_result(report["compile"]) if report.get("compile") else None
    if status == "compile-failed":
        assert compiled is not None
        status = compiled.status if compiled.status is not RunStatus.OK else RunStatus.ERROR
        return RunResult(
            status=status,
            exit_code=compiled.exit_code,
            signal=compiled.signal,
            stdout=compiled.stdout,
            stderr=compiled.stderr,
            stdout_truncated=compiled.stdout_truncated,
            stderr_truncated=compiled.stderr_truncated,
            wall_time_s=compiled.wall_time_s,
            cpu_time_s=compiled.cpu_time_s,
            peak_memory_mb=compiled.peak_memory_mb,
            message=f"compilation failed: {compiled.message}",
            compile=compiled,
        )
    run = _step_result(report["run"])
    files = {path: base64.b64decode(data) for path, data in report.get("files", {}).items()}
    return RunResult(
        status=run.status,
        exit_code=run.exit_code,
        signal=run.signal,
        stdout=run.stdout,
        stderr=run.stderr,
        stdout_truncated=run.stdout_truncated,
        stderr_truncated=run.stderr_truncated,
        wall_time_s=run.wall_time_s,
        cpu_time_s=run.cpu_time_s,
        peak_memory_mb=run.peak_memory_mb,
        files=files,
        message=run.message,
        compile=compiled,
    )


class SupervisorProcess:
    """One live supervisor, reached over a socketpair that it sees as `fd`.

    `argv_prefix` is what wraps the interpreter (bwrap and its flags, or nothing);
    `config` goes to the supervisor's `main`. `pre_exec_groups`: cgroup.procs files the
    process joins before anything else starts (done by a tiny `sh` so no Python runs
    between fork and exec).
    """

    def __init__(
        self,
        argv_prefix: Sequence[str],
        python: str,
        config: dict[str, Any],
        *,
        cgroup_procs: Sequence[str] = (),
        user: int | None = None,
        startup_timeout_s: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        host_end, child_end = socket.socketpair()
        fd = str(child_end.fileno())
        argv = [*argv_prefix, python, "-I", "-S", "-B", "-c", BOOTSTRAP, fd, fd]
        if cgroup_procs:
            join = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 111; shift; done; '
            join += 'shift; exec "$@"'
            argv = ["/bin/sh", "-c", join, "sh", *cgroup_procs, "--", *argv]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(child_end.fileno(),),
                env=env if env is not None else {"PATH": DEFAULT_PATH},
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
                start_new_session=True,
            )
        finally:
            child_end.close()
        self.sock = host_end
        self.sock.settimeout(startup_timeout_s)
        try:
            version = self._read_line()
            code = supervisor_code_marshalled(version)
            self.sock.sendall(struct.pack(">I", len(code)) + code)
            send_message(self.sock, config)
            hello = recv_message(self.sock)
        except (TimeoutError, OSError, ValueError):
            hello = None
        if not hello or not hello.get("ready"):
            detail = self.stderr_text() or f"exit status {self.process.poll()}"
            self.close()
            raise SandboxError(f"the sandbox did not start: {detail}")
        self.python_version: str = hello["python"]
        self.runs = 0

    def _read_line(self) -> str:
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise ValueError("the sandbox exited before saying hello")
            line += chunk
        return line.decode().strip()

    def stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").strip()[-2000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one run and wait for its report. A dead or stuck supervisor raises
        SandboxError; the caller then discards this process."""
        self.sock.settimeout(payload["deadline_s"] + DEADLINE_GRACE_S)
        try:
            send_message(self.sock, payload)
            report = recv_message(self.sock)
        except (TimeoutError, OSError) as exc:
            raise SandboxError(f"the sandbox stopped answering ({type(exc).__name__})") from exc
        if report is None:
            raise SandboxError(f"the sandbox exited mid-run: {self.stderr_text() or self.process.poll()}")
        self.runs += 1
        return report

    def close(self, grace_s: float = 0.0) -> None:
        """Kill the supervisor's whole session, after `grace_s` to exit by itself (a cold
        supervisor does, once it has reported). Safe to call twice."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if grace_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._stderr.close()

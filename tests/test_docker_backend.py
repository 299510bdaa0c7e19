"""The docker backend. Runs that need an engine skip where none answers (checked with a real
ping); the rest holds without one: the container spec and its limits, the refusal at
construction, and the supervisor speaking through docker's attach framing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from sandbox import Limits, RunRequest, RunResult, RunStatus, SandboxError, make_sandbox
from sandbox.docker_attach import STDERR, STDOUT, AttachChannel, frame, start_supervisor
from sandbox.docker_backend import (
    COMPILE_MEMORY_MB,
    SUPERVISOR_CONFIG,
    DockerConfig,
    DockerSandbox,
    container_spec,
    report_limit,
)
from sandbox.supervisor import BOOTSTRAP
from sandbox.supervisor_link import base_env, build_payload, result_from_report

from conftest import cli_without, free_port, wait_for_http

MIB = 1 << 20


SDK = importlib.util.find_spec("docker") is not None


def _engine_answers() -> bool:
    if not SDK:
        return False
    import docker

    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, OSError):  # no socket, no engine: both mean no
        return False


ENGINE = _engine_answers()
needs_sdk = pytest.mark.skipif(not SDK, reason="the docker SDK is not installed (pip install 'docker>=7')")
needs_engine = pytest.mark.skipif(not ENGINE, reason="no Docker engine answers here")
no_engine_only = pytest.mark.skipif(ENGINE or not SDK, reason="a Docker engine answers here, or no SDK")


def serve_sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rewardgym", "serve-sandbox", "--port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# -- without an engine ---------------------------------------------------------------


@needs_sdk
def test_construction_without_an_engine_raises_one_clear_error(tmp_path: Path) -> None:
    for base_url in (f"unix://{tmp_path}/docker.sock", f"tcp://127.0.0.1:{free_port()}"):
        with pytest.raises(SandboxError, match=f"no Docker engine answers at {base_url}"):
            DockerSandbox(DockerConfig(base_url=base_url))
        with pytest.raises(SandboxError, match=f"no Docker engine answers at {base_url}"):
            make_sandbox("docker", base_url=base_url)


@no_engine_only
def test_the_default_engine_address_is_named_when_none_answers() -> None:
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    with pytest.raises(SandboxError, match=f"no Docker engine answers at {where}.*bubblewrap backend"):
        make_sandbox("docker")


@no_engine_only
def test_the_cli_reports_a_missing_engine_in_one_line() -> None:
    out = serve_sandbox("--backend", "docker")
    assert out.returncode == 2, out.stderr
    assert "no Docker engine answers at" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr


def test_a_missing_docker_sdk_is_named_in_one_line() -> None:
    """Without the SDK (blocked here, as a base install lacks it) the backend says what to install."""
    out = cli_without("docker", ["serve-sandbox", "--backend", "docker", "--port", "1"])
    assert out.returncode == 2
    assert "the docker backend needs the Python package 'docker'" in " ".join(out.stderr.split())


def test_config_refuses_bad_values_and_options_that_would_weaken_the_walls() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        DockerConfig(pool_size=0)
    with pytest.raises(ValueError, match=r"may not set \['cap_add', 'privileged'\]"):
        DockerConfig(extra_options={"privileged": True, "cap_add": ["SYS_ADMIN"]})
    with pytest.raises(TypeError):
        make_sandbox("docker", colour="blue")


def test_the_container_spec_holds_every_wall_and_limit() -> None:
    limits = Limits(wall_time_s=3, memory_mb=300, max_processes=20, max_file_bytes=5 * MIB, disk_mb=32)
    config = DockerConfig(image="python:3.12-slim", cpus=0.5, extra_options={"runtime": "runsc"})
    spec = container_spec(RunRequest(code="print(1)", limits=limits), config)
    assert spec["image"] == "python:3.12-slim" and spec["runtime"] == "runsc"
    # The bootstrap, talking over stdin (0) and stdout (1): no argv full of supervisor source.
    assert spec["command"] == ["python3", "-I", "-S", "-B", "-c", BOOTSTRAP, "0", "1"]
    assert spec["stdin_open"] is True and spec["tty"] is False  # no TTY: a binary-safe, framed stream
    assert spec["network_mode"] == "none"
    assert spec["read_only"] is True and spec["privileged"] is False
    assert spec["cap_drop"] == ["ALL"] and spec["security_opt"] == ["no-new-privileges"]
    assert spec["user"] == "61000:61000" and spec["environment"] == {}
    assert container_spec(RunRequest(code=""), config, uid=61003)["user"] == "61003:61003"
    tmpfs = "rw,exec,nosuid,nodev,size=32m,mode=1777"
    assert spec["tmpfs"] == {"/work": tmpfs, "/tmp": tmpfs} and spec["shm_size"] == 32 * MIB
    memory = (300 + 3 * 32 + 96) * MIB  # the program, three tmpfs, the supervisor
    assert spec["mem_limit"] == spec["memswap_limit"] == memory
    assert spec["pids_limit"] == 20 + 2
    assert spec["nano_cpus"] == 500_000_000
    assert spec["ulimits"] == [
        {"name": "nofile", "soft": 256, "hard": 256},
        {"name": "fsize", "soft": 5 * MIB, "hard": 5 * MIB},
        {"name": "core", "soft": 0, "hard": 0},
    ]
    assert spec["log_config"]["type"] == "none" and spec["auto_remove"] is False
    assert "working_dir" not in spec  # docker would make it 0755 over the tmpfs's 1777


@pytest.mark.skipif(shutil.which("g++") is None, reason="build_payload checks for g++ on the host")
def test_the_container_leaves_room_for_every_limit_the_supervisor_sets() -> None:
    """The supervisor can lower a hard limit but not raise one: the container's must cover
    the compile step's, or a C++ build would fail to start."""
    limits = Limits(memory_mb=128, max_processes=8, max_file_bytes=MIB, max_open_files=32)
    request = RunRequest(code="int main(){}", language="cpp", limits=limits)
    spec = container_spec(request, DockerConfig())
    payload = build_payload(request, workdir="/work", env={})
    ulimits = {u["name"]: u["hard"] for u in spec["ulimits"]}
    for step in (payload["limits"], payload["compile"]["limits"]):
        assert ulimits["nofile"] >= step["max_open_files"]
        assert ulimits["fsize"] >= step["max_file_bytes"]
        assert spec["pids_limit"] > step["max_processes"]
        assert spec["mem_limit"] > step["memory_mb"] * MIB
    assert spec["mem_limit"] >= COMPILE_MEMORY_MB * MIB


def test_report_limit_covers_output_and_fetched_files() -> None:
    request = RunRequest(
        code="", fetch_files=("a", "b"), limits=Limits(max_output_bytes=MIB, max_file_bytes=MIB)
    )
    assert report_limit(request) >= (4 + 2) * MIB * 4 // 3


# -- docker's attach framing, with the real supervisor -------------------------------


class EmulatedAttach:
    """Stands in for the engine's attach endpoint, which cannot run here: the supervisor runs
    as a local process started as in the container (same command, an unprivileged uid when
    we are root, as the container's user is); what the host sends reaches its stdin raw, and
    its stdout and stderr come back in docker's frames. Each stdout chunk is split in two
    with a stderr frame between, so the host must demultiplex."""

    def __init__(self, workdir: Path, bootstrap: str = BOOTSTRAP) -> None:
        as_root = os.geteuid() == 0
        python = "/usr/bin/python3" if as_root else sys.executable  # one the unprivileged uid can run
        self.host, self._engine = socket.socketpair()
        self.process = subprocess.Popen(
            [python, "-I", "-S", "-B", "-c", bootstrap, "0", "1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin"},
            user=65534 if as_root else None,
            group=65534 if as_root else None,
            extra_groups=[] if as_root else None,
            start_new_session=True,
        )
        self._send_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._stdin_pump, daemon=True),
            threading.Thread(target=self._output_pump, args=(self.process.stdout, STDOUT), daemon=True),
            threading.Thread(target=self._output_pump, args=(self.process.stderr, STDERR), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _stdin_pump(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            while data := self._engine.recv(65536):
                self.process.stdin.write(data)
                self.process.stdin.flush()
        with contextlib.suppress(OSError):
            self.process.stdin.close()

    def _output_pump(self, pipe: object, stream: int) -> None:
        fd = pipe.fileno()  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            while data := os.read(fd, 65536):
                half = len(data) // 2
                with self._send_lock:
                    if stream == STDOUT:
                        noise = frame(STDERR, b"noise ")
                        self._engine.sendall(frame(STDOUT, data[:half]) + noise + frame(STDOUT, data[half:]))
                    else:
                        self._engine.sendall(frame(stream, data))
        if stream == STDOUT:
            with contextlib.suppress(OSError):
                self._engine.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self._engine.close()
        self.host.close()


def run_attached(request: RunRequest, bootstrap: str = BOOTSTRAP) -> RunResult:
    """One cold run, as the docker backend does it: handshake, one payload, one report, in a
    fresh work dir the unprivileged user can write (the container's tmpfs)."""
    if os.geteuid() == 0 and not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 to run the supervisor as an unprivileged uid")
    workdir = Path(tempfile.mkdtemp(prefix="rewardgym-docker-test-"))
    workdir.chmod(0o1777)
    emulated = EmulatedAttach(workdir, bootstrap)
    channel = AttachChannel(emulated.host)
    try:
        hello = start_supervisor(channel, SUPERVISOR_CONFIG, time.monotonic() + 30)
        assert hello["ready"]
        payload = build_payload(request, workdir=str(workdir), env=base_env(None, str(workdir)))
        channel.send(payload, time.monotonic() + 60)
        report = channel.recv(time.monotonic() + 60, report_limit(request))
        assert report is not None, channel.stderr_text()
        assert "noise" in channel.stderr_text()  # stderr frames were kept apart from the reports
        return result_from_report(report, 0.0)
    finally:
        emulated.close()
        shutil.rmtree(workdir, ignore_errors=True)


# A generous process limit: outside a container, RLIMIT_NPROC counts all of the user's processes.
ATTACHED = Limits(wall_time_s=10, memory_mb=512, max_processes=4096)


def test_the_supervisor_runs_through_the_attach_framing() -> None:
    code = "import sys\ndata = open('in.txt').read()\nopen('out.bin', 'wb').write(bytes(range(256)))\n"
    code += "print(data + sys.stdin.read(), 'x' * 300000)"
    request = RunRequest(
        code=code,
        files={"in.txt": b"from a file, "},
        stdin=b"from stdin",
        fetch_files=("out.bin", "missing"),
        limits=ATTACHED,
    )
    result = run_attached(request)
    assert result.status is RunStatus.OK, result
    assert result.stdout == "from a file, from stdin " + "x" * 300000 + "\n"  # a report over many frames
    assert dict(result.files) == {"out.bin": bytes(range(256))}


def test_timeouts_and_errors_come_back_as_the_local_backends_report_them() -> None:
    slow = run_attached(RunRequest(code="while True: pass", limits=replace(ATTACHED, wall_time_s=1)))
    assert slow.status is RunStatus.TIMEOUT and slow.wall_time_s > 0.9  # the wall or the CPU limit
    failed = run_attached(RunRequest(code="raise ValueError('boom')", limits=ATTACHED))
    assert failed.status is RunStatus.ERROR and failed.exit_code == 1 and "ValueError: boom" in failed.stderr


FORGE = """
import ctypes, json, os, struct
fake = {"status": "ok", "run": {"status": "ok", "exit_code": 0, "signal": None, "stdout": "Zm9yZ2Vk",
        "stderr": "", "stdout_truncated": False, "stderr_truncated": False, "wall_time_s": 0.0,
        "cpu_time_s": 0.0, "peak_memory_kb": 0, "message": ""}, "files": {}}
body = json.dumps(fake).encode()
libc = ctypes.CDLL(None, use_errno=True)
channel = libc.syscall(438, os.pidfd_open(os.getppid()), 1, 0)  # pidfd_getfd: the parent's stdout
if channel < 0:
    print("refused:", os.strerror(ctypes.get_errno()))
    try:
        channel = os.open("/proc/%d/fd/1" % os.getppid(), os.O_WRONLY)
    except OSError as exc:
        print("refused:", exc.strerror)
if channel >= 0:
    os.write(channel, struct.pack(">I", len(body)) + body)
    print("wrote a forged report")
raise SystemExit(3)
"""


def test_a_run_cannot_forge_its_report_through_the_supervisors_channel() -> None:
    """The program shares the supervisor's uid in a container, and a report written to the
    supervisor's stdout ahead of the real one would be taken as the run's. The supervisor is
    not dumpable, so neither pidfd_getfd nor /proc/<pid>/fd reaches its stdout."""
    result = run_attached(RunRequest(code=FORGE, limits=ATTACHED))
    assert result.status is RunStatus.ERROR and result.exit_code == 3, result
    assert result.stdout.count("refused:") == 2, result.stdout


def test_the_channel_bounds_what_it_reads() -> None:
    host, engine = socket.socketpair()
    channel = AttachChannel(host)
    try:
        engine.sendall(frame(STDOUT, (10**9).to_bytes(4, "big")))
        with pytest.raises(SandboxError, match="1000000000-byte report"):
            channel.recv(time.monotonic() + 5, MIB)
        with pytest.raises(TimeoutError):
            channel.recv(time.monotonic() + 0.2, MIB)  # nothing more comes: the deadline holds
        engine.sendall(frame(STDOUT, b"\x00\x00\x00\x02{"))
        engine.shutdown(socket.SHUT_WR)
        assert channel.recv(time.monotonic() + 5, MIB) is None  # the stream ended mid-report
    finally:
        host.close()
        engine.close()


# -- with an engine ------------------------------------------------------------------

# An image with Python 3.9+ (and gcc/g++ for the C++ test); the default needs Docker Hub.
IMAGE = os.environ.get("REWARDGYM_TEST_DOCKER_IMAGE", DockerConfig.image)


@pytest.fixture(scope="module")
def docker_sandbox() -> Iterator[DockerSandbox]:
    with DockerSandbox(DockerConfig(image=IMAGE, pool_size=2)) as sb:
        yield sb


def _leftovers(sandbox: DockerSandbox) -> list[object]:
    return sandbox.client.containers.list(all=True, filters={"label": "rewardgym.sandbox"})


@needs_engine
def test_python_runs_in_a_walled_container(docker_sandbox: DockerSandbox) -> None:
    code = (
        "import os, socket\n"
        "print(os.getuid(), sorted(os.environ), input())\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
        "except OSError:\n    print('no network')\n"
        "for path in ('/etc/x', '/usr/x', '/x'):\n"
        "    try:\n        open(path, 'w')\n    except OSError:\n        print('read-only', path)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "open('/tmp/left', 'w').write('x')\n"
        "open('out.txt', 'w').write('done')\n"
    )
    result = docker_sandbox.run_sync(RunRequest(code=code, stdin=b"hi\n", fetch_files=("out.txt",)))
    assert result.status is RunStatus.OK, result
    uid, _, rest = result.stdout.partition(" ")
    assert 61000 <= int(uid) < 61004 and "REWARDGYM" not in rest and "hi" in rest
    assert "no network" in result.stdout and result.stdout.count("read-only") == 3
    assert "0000000000000000" in result.stdout  # no capabilities
    assert dict(result.files) == {"out.txt": b"done"}
    again = docker_sandbox.run_sync(RunRequest(code="import os\nprint(os.path.exists('/tmp/left'))"))
    assert again.stdout == "False\n"  # a fresh container: nothing of the last run


@needs_engine
def test_limits_hold_in_the_container(docker_sandbox: DockerSandbox) -> None:
    def run(code: str, **limits: float) -> RunResult:
        return docker_sandbox.run_sync(RunRequest(code=code, limits=Limits(**limits)))  # type: ignore[arg-type]

    slow = run("import time\ntime.sleep(30)", wall_time_s=1)
    assert slow.status is RunStatus.TIMEOUT and slow.wall_time_s < 5
    hungry = run("x = bytearray(400 << 20)", memory_mb=128)
    assert hungry.status is RunStatus.MEMORY
    loud = run("print('x' * 100000)", max_output_bytes=1000)
    assert loud.status is RunStatus.OUTPUT_LIMIT and loud.stdout_truncated
    bomb = (
        "import os, time\nn = 1\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)"
    )
    forks = run(bomb, max_processes=16, wall_time_s=10)
    assert forks.status is RunStatus.OK and int(forks.stdout) <= 16, forks
    too_big = run("open('big', 'wb').write(b'x' * (8 << 20))", max_file_bytes=1 << 20)
    assert too_big.status is RunStatus.ERROR and "File too large" in too_big.stderr
    # Each process stays under its address-space limit; together they pass the container's.
    herd = (
        "import os, time\nkids = []\nfor _ in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = bytearray(110 << 20)\n        b[::4096] = b'x' * len(b[::4096])\n        time.sleep(2)\n"
        "        os._exit(0)\n    kids.append(pid)\ncodes = [os.waitpid(k, 0)[1] for k in kids]\n"
        "raise SystemExit(1 if any(codes) else 0)"
    )
    crowded = run(herd, memory_mb=128, disk_mb=16, wall_time_s=20)
    assert crowded.status is RunStatus.MEMORY and "container's memory limit" in crowded.message, crowded


@needs_engine
def test_a_run_cannot_forge_its_report_in_a_container(docker_sandbox: DockerSandbox) -> None:
    result = docker_sandbox.run_sync(RunRequest(code=FORGE))
    assert result.status is RunStatus.ERROR and result.exit_code == 3, result
    assert result.stdout.count("refused:") == 2, result.stdout


@needs_engine
def test_cpp_compiles_and_runs_and_no_container_is_left(docker_sandbox: DockerSandbox) -> None:
    code = "#include <iostream>\nint main(){int a,b; std::cin>>a>>b; std::cout<<a+b<<std::endl;}"
    result = docker_sandbox.run_sync(RunRequest(code=code, language="cpp", stdin=b"2 40"))
    assert result.status is RunStatus.OK and result.stdout == "42\n", result
    assert result.compile is not None and result.compile.ok
    broken = docker_sandbox.run_sync(RunRequest(code="int main( {", language="c"))
    assert broken.status is RunStatus.ERROR and broken.compile is not None and "error" in broken.stderr
    deadline = time.monotonic() + 30
    while _leftovers(docker_sandbox) and time.monotonic() < deadline:
        time.sleep(0.2)  # removal runs in the background, after the result is back
    assert _leftovers(docker_sandbox) == []


@needs_engine
def test_concurrent_runs_get_their_own_containers_and_uids() -> None:
    with DockerSandbox(DockerConfig(image=IMAGE, pool_size=3)) as sandbox:

        async def many() -> list[RunResult]:
            code = "import os, time\ntime.sleep(0.5)\nprint(os.getuid())"
            return await asyncio.gather(*(sandbox.run(RunRequest(code=code)) for _ in range(3)))

        results = asyncio.run(many())
        assert all(r.status is RunStatus.OK for r in results), results
        assert len({r.stdout for r in results}) == 3  # a per-user limit never counts another run
    assert _leftovers(sandbox) == []  # close() waited for every removal


@needs_engine
def test_the_sandboxfusion_endpoint_serves_over_docker() -> None:
    port = free_port()
    command = [sys.executable, "-m", "rewardgym", "serve-sandbox", "--backend", "docker"]
    command += ["--docker-image", IMAGE, "--port", str(port), "--pool-size", "2"]
    process = subprocess.Popen(command)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        code = "#include <iostream>\nint main(){int a,b; std::cin>>a>>b; std::cout<<a*b<<std::endl;}"
        body = {"code": code, "language": "cpp", "stdin": "6 7", "compile_timeout": 30, "run_timeout": 5}
        answer = httpx.post(f"http://127.0.0.1:{port}/run_code", json=body, timeout=60).json()
        assert answer["status"] == "Success" and answer["run_result"]["stdout"] == "42\n", answer
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["backend"] == "docker"
    finally:
        process.terminate()
        process.wait(timeout=30)

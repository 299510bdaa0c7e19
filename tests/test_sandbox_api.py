"""The sandbox API on the real bubblewrap backend: languages, I/O, files, limits, statuses,
warm and cold paths, the unsafe opt-in and the refusals."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandbox as sandbox_api
from sandbox import Limits, RunRequest, RunResult, RunStatus, SandboxError, default_sandbox, make_sandbox
from sandbox.bubblewrap import BubblewrapConfig, BubblewrapSandbox
from sandbox.cgroups import detect_layout

from test_sandbox_attacks import FORK_UNTIL_REFUSED

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
QUICK = Limits(wall_time_s=5, memory_mb=256)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[BubblewrapSandbox]:
    with BubblewrapSandbox(BubblewrapConfig(pool_size=2)) as sb:
        yield sb


def run(sandbox: BubblewrapSandbox, **fields: object) -> RunResult:
    fields.setdefault("limits", QUICK)
    return sandbox.run_sync(RunRequest(**fields))  # type: ignore[arg-type]


def test_python_runs_with_args_stdin_and_a_clean_environment(sandbox: BubblewrapSandbox) -> None:
    code = "import os, sys\nprint(sys.argv[1:], input(), os.getcwd(), sorted(os.environ))"
    result = run(sandbox, code=code, args=("a", "b"), stdin=b"from stdin\n", env={"MY_VAR": "1"})
    assert result.status is RunStatus.OK, result
    argv, rest = result.stdout.split("] ", 1)
    assert argv == "['a', 'b'"
    assert rest.startswith("from stdin /work ")
    assert "'MY_VAR'" in rest and "'REWARDGYM" not in rest and "'HOSTNAME'" not in rest
    assert result.exit_code == 0 and result.wall_time_s > 0 and result.peak_memory_mb > 1


def test_files_in_and_fetched_files_out(sandbox: BubblewrapSandbox) -> None:
    code = "import json\ndata = json.load(open('in/data.json'))\nopen('out.txt', 'w').write(str(sum(data)))"
    result = run(
        sandbox, code=code, files={"in/data.json": b"[1, 2, 3]"}, fetch_files=("out.txt", "missing.txt")
    )
    assert result.status is RunStatus.OK, result
    assert dict(result.files) == {"out.txt": b"6"}


def test_command_mode_runs_an_argv_over_given_files(sandbox: BubblewrapSandbox) -> None:
    result = run(sandbox, command=("sh", "run.sh", "x"), files={"run.sh": b"echo got $1; exit 4"})
    assert (result.status, result.exit_code, result.stdout) == (RunStatus.ERROR, 4, "got x\n")
    assert "status 4" in result.message


def test_python_exit_codes_exceptions_and_memory_error(sandbox: BubblewrapSandbox) -> None:
    assert run(sandbox, code="import sys; sys.exit(3)").exit_code == 3
    assert run(sandbox, code="raise SystemExit('bye')").stderr == "bye\n"
    failed = run(sandbox, code="def f():\n    raise ValueError('boom')\nf()")
    assert failed.status is RunStatus.ERROR and failed.exit_code == 1
    assert "ValueError: boom" in failed.stderr and 'File "/work/main.py", line 2' in failed.stderr
    memory = run(sandbox, code="x = bytearray(1 << 30)", limits=Limits(memory_mb=128))
    assert memory.status is RunStatus.MEMORY and "128 MiB" in memory.message


def test_atexit_handlers_and_threads_finish_like_in_python(sandbox: BubblewrapSandbox) -> None:
    code = (
        "import atexit, threading, time\natexit.register(lambda: print('atexit ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread done'))).start()\nprint('main done')"
    )
    assert run(sandbox, code=code).stdout == "main done\nthread done\natexit ran\n"


def test_bash(sandbox: BubblewrapSandbox) -> None:
    result = run(sandbox, code='read x; echo "hello $x"; echo err >&2', language="bash", stdin=b"world\n")
    assert (result.status, result.stdout, result.stderr) == (RunStatus.OK, "hello world\n", "err\n")


@pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("g++") is None, reason="no C/C++ compiler here"
)
def test_c_and_cpp_compile_and_run(sandbox: BubblewrapSandbox) -> None:
    c = run(sandbox, code='#include <stdio.h>\nint main(){int a,b;scanf("%d %d",&a,&b);printf("%d\\n",a+b);}',
            language="c", stdin=b"2 40")  # fmt: skip
    assert (c.status, c.stdout) == (RunStatus.OK, "42\n"), c
    assert c.compile is not None and c.compile.status is RunStatus.OK
    cpp = run(
        sandbox, code='#include <iostream>\nint main(){std::cout<<"hi"<<std::endl;return 2;}', language="cpp"
    )
    assert (cpp.status, cpp.exit_code, cpp.stdout) == (RunStatus.ERROR, 2, "hi\n")
    broken = run(sandbox, code="int main( {", language="c")
    assert broken.status is RunStatus.ERROR and broken.message.startswith("compilation failed")
    assert "error" in broken.stderr and broken.compile is not None


def test_a_crash_by_signal_is_an_error_that_names_it(sandbox: BubblewrapSandbox) -> None:
    result = run(sandbox, code="import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert (result.status, result.signal, result.exit_code) == (RunStatus.ERROR, 11, -11)
    assert "SIGSEGV" in result.message or "Segmentation" in result.message


def test_output_past_the_cap_is_truncated_and_flagged(sandbox: BubblewrapSandbox) -> None:
    result = run(sandbox, code="print('a' * 5000)", limits=Limits(max_output_bytes=1000))
    assert result.status is RunStatus.OUTPUT_LIMIT
    assert result.stdout == "a" * 1000 and result.stdout_truncated and not result.stderr_truncated


def test_timeouts_stop_at_the_wall_limit(sandbox: BubblewrapSandbox) -> None:
    result = run(sandbox, code="import time\ntime.sleep(30)", limits=Limits(wall_time_s=0.5))
    assert result.status is RunStatus.TIMEOUT and 0.5 <= result.wall_time_s < 2.0
    assert "wall-clock" in result.message


def test_concurrent_async_runs_all_complete(sandbox: BubblewrapSandbox) -> None:
    async def many() -> list[RunResult]:
        return await asyncio.gather(*[sandbox.run(RunRequest(code=f"print({i} ** 2)")) for i in range(40)])

    results = asyncio.run(many())
    assert [r.stdout for r in results] == [f"{i**2}\n" for i in range(40)]


def test_warm_and_cold_give_the_same_results() -> None:
    request = RunRequest(code="import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin=b"1 2 3 4")
    with BubblewrapSandbox(BubblewrapConfig(warm=False, pool_size=1)) as cold:
        cold_result = cold.run_sync(request)
    with BubblewrapSandbox(BubblewrapConfig(warm=True, pool_size=1)) as warm:
        warm_result = warm.run_sync(request)
    assert cold_result.stdout == warm_result.stdout == "10\n"
    assert cold_result.status is warm_result.status is RunStatus.OK


def test_closing_the_sandbox_leaves_no_process_and_no_cgroup() -> None:
    layout = detect_layout()
    mine = f"sandbox-{os.getpid()}-*"
    before = set(layout.pids_parent.glob(mine)) if layout else set()
    sandbox = BubblewrapSandbox(BubblewrapConfig(pool_size=2))
    asyncio.run(sandbox.run(RunRequest(code="print(1)")))
    pids = [p.process.pid for p in sandbox._pool.idle()]
    assert pids
    sandbox.close()
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z", f"supervisor {pid} still running"
    if layout:
        assert set(layout.pids_parent.glob(mine)) == before
    assert sandbox.run_sync(RunRequest(code="print(1)")).status is RunStatus.SANDBOX_ERROR


def test_bad_requests_are_refused_clearly(sandbox: BubblewrapSandbox) -> None:
    with pytest.raises(ValueError, match="needs `code` or a `command`"):
        RunRequest()
    with pytest.raises(ValueError, match="relative to the work dir"):
        RunRequest(code="", files={"../escape": b""})
    with pytest.raises(ValueError, match="relative to the work dir"):
        RunRequest(code="", fetch_files=("/etc/passwd",))
    with pytest.raises(ValueError, match="wall_time_s must be positive"):
        Limits(wall_time_s=0)
    unknown = run(sandbox, code="x", language="cobol")
    assert unknown.status is RunStatus.SANDBOX_ERROR and "unknown language 'cobol'" in unknown.message


def test_missing_bubblewrap_is_refused_with_what_to_do() -> None:
    with pytest.raises(SandboxError, match=r"not installed: install bubblewrap .*unsafe-no-isolation"):
        BubblewrapSandbox(BubblewrapConfig(bwrap="no-such-bwrap-here"))
    with pytest.raises(SandboxError, match="unknown sandbox backend 'podman'"):
        make_sandbox("podman")


def test_unsafe_backend_must_be_named_and_says_so_loudly() -> None:
    with pytest.warns(UserWarning, match="UNSAFE"):
        sandbox = make_sandbox("unsafe-no-isolation", pool_size=1)
    try:
        result = sandbox.run_sync(
            RunRequest(code="open('x', 'w').write('1')\nprint(open('x').read())", fetch_files=("x",))
        )
        assert (result.status, result.stdout, dict(result.files)) == (RunStatus.OK, "1\n", {"x": b"1"})
        timeout = sandbox.run_sync(RunRequest(code="while True: pass", limits=Limits(wall_time_s=0.5)))
        assert timeout.status is RunStatus.TIMEOUT
    finally:
        sandbox.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged-uid fallback is for root hosts")
def test_root_without_cgroups_falls_back_to_an_unprivileged_uid() -> None:
    python = "/usr/bin/python3"
    if subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", ""]
    ).returncode:
        pytest.skip(f"{python} is not runnable by uid 65534 here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sandbox = BubblewrapSandbox(BubblewrapConfig(use_cgroups=False, python=python, pool_size=1))
    try:
        assert "unprivileged uid" in sandbox.isolation
        limits = Limits(max_processes=16, wall_time_s=5)
        result = sandbox.run_sync(RunRequest(code=FORK_UNTIL_REFUSED, limits=limits))
        assert result.status is RunStatus.OK and int(result.stdout.split()[1]) <= 16, result
        assert sandbox.leftover_processes() == []
    finally:
        sandbox.close()
    with pytest.raises(SandboxError, match="must be readable by that user"):
        BubblewrapSandbox(BubblewrapConfig(use_cgroups=False, python="/root/.no-such/bin/python3"))


def test_the_module_level_run_uses_the_shared_warm_bubblewrap_sandbox() -> None:
    result = asyncio.run(sandbox_api.run(RunRequest(code="print(6 * 7)", limits=QUICK)))
    assert (result.status, result.stdout) == (RunStatus.OK, "42\n"), result
    shared = default_sandbox()
    assert isinstance(shared, BubblewrapSandbox) and shared.warm and shared is default_sandbox()
    started = shared.runs_started
    asyncio.run(sandbox_api.run(RunRequest(code="pass", limits=QUICK)))
    assert shared.runs_started == started + 1


def test_bwrap_that_cannot_build_namespaces_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A real stand-in for a bwrap that the host forbids namespaces (what bubblewrap prints there)."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SandboxError) as refused:
        BubblewrapSandbox(BubblewrapConfig(bwrap=str(fake), pool_size=1))
    message = str(refused.value)
    assert message.startswith("the sandbox did not start: bwrap: No permissions to creating new namespace")
    assert "unprivileged user namespaces" in message and "backend='unsafe-no-isolation'" in message


def test_a_compiled_language_without_its_compiler_is_refused_by_name(sandbox: BubblewrapSandbox) -> None:
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = "/nonexistent"  # what the compiler check looks through
    try:
        result = run(sandbox, code="int main(void) { return 0; }", language="c")
    finally:
        os.environ["PATH"] = saved
    assert result.status is RunStatus.SANDBOX_ERROR
    assert result.message == "language 'c' needs gcc, not found on this host"


def test_warm_supervisors_outlive_the_threads_that_started_them() -> None:
    """bwrap --die-with-parent follows the starting *thread*: callers of run_sync on
    short-lived threads must not kill the pool; one killed from outside is replaced."""
    with BubblewrapSandbox(BubblewrapConfig(pool_size=2)) as box:
        slow = RunRequest(code="import time; time.sleep(0.3)", limits=QUICK)
        both = [threading.Thread(target=box.run_sync, args=(slow,)) for _ in range(2)]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
        idle = box._pool.idle()
        assert len(idle) == 2 and all(process.alive() for process in idle)
        os.killpg(idle[-1].process.pid, signal.SIGKILL)
        idle[-1].process.wait(timeout=10)
        result = box.run_sync(RunRequest(code="print('replaced')", limits=QUICK))
        assert (result.status, result.stdout) == (RunStatus.OK, "replaced\n"), result

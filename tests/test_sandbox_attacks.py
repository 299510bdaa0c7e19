"""Real attacks against the real bubblewrap sandbox (REFERENCE.md's checklist).

Every attack must be contained, end with the right status, and leave the host healthy:
no process outliving its run, no file left on the host, the next run working. Before
any destructive program is sent, `isolated_sandbox` probes isolation with harmless
checks and fails loudly if the sandbox can see or touch the host, so a broken sandbox
never fork-bombs the machine running the tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox import Limits, RunRequest, RunResult, RunStatus
from sandbox.bubblewrap import BubblewrapConfig, BubblewrapSandbox
from sandbox.cgroups import detect_layout

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v bwrap"], capture_output=True).returncode != 0,
    reason="bubblewrap is not installed (the README's set-up command installs it)",
)

LIMITS = Limits(
    wall_time_s=2.0,
    memory_mb=256,
    max_processes=32,
    max_output_bytes=64 << 10,
    max_file_bytes=8 << 20,
    disk_mb=16,
)
SECRET = f"host-secret-{uuid.uuid4().hex}"
os.environ["REWARDGYM_TEST_SECRET"] = SECRET  # must never be visible inside


@dataclass
class Host:
    """Things on the host the attacks aim at."""

    marker: subprocess.Popen
    marker_arg: str
    port: int
    connections: list[str] = field(default_factory=list)
    repo: str = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    marker_arg = f"{600 + int(uuid.uuid4().int % 1000) / 1000:.3f}"
    marker = subprocess.Popen(["sleep", marker_arg])
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    found = Host(marker, marker_arg, server.getsockname()[1])
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            found.connections.append("connected")
            conn.close()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield found
    stop.set()
    thread.join()
    server.close()
    marker.kill()
    marker.wait()


# Every name an attack writes under; other processes on the machine may create files in /tmp too.
ATTACK_FILE_NAMES = ("fill", "big", "evil", "secret", "left", "planted", "out", "main.", "rewardgym-probe")


def _host_files() -> set[str]:
    return {
        str(p)
        for d in ("/tmp", "/dev/shm")
        for p in Path(d).iterdir()
        if p.name.startswith(ATTACK_FILE_NAMES)
    }


PROBE = """
import os, socket, sys
seen = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            seen.append(open('/proc/%s/cmdline' % pid, 'rb').read().replace(b'\\0', b' ').decode())
        except OSError:
            pass
print('MARKER_VISIBLE' if any(sys.argv[1] in c for c in seen) else 'marker hidden')
open('/tmp/' + sys.argv[2], 'w').write('probe')
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[3])), timeout=1)
    print('LOOPBACK_REACHABLE')
except OSError:
    print('loopback closed')
"""


def probe_isolation(sandbox: BubblewrapSandbox, host: Host) -> None:
    """Harmless checks before any destructive program is sent: fail loudly (and close the
    sandbox) if it can see host processes, write to the host's /tmp or reach its loopback."""
    probe_file = f"rewardgym-probe-{uuid.uuid4().hex}"
    result = sandbox.run_sync(
        RunRequest(code=PROBE, args=(host.marker_arg, probe_file, str(host.port)), limits=LIMITS)
    )
    problems = []
    if result.status is not RunStatus.OK:
        problems.append(f"the probe did not run: {result.status} {result.message} {result.stderr[-500:]}")
    if "MARKER_VISIBLE" in result.stdout:
        problems.append("the sandbox sees host processes")
    if Path("/tmp", probe_file).exists():
        Path("/tmp", probe_file).unlink()
        problems.append("a write to the sandbox's /tmp reached the host's /tmp")
    if "LOOPBACK_REACHABLE" in result.stdout or host.connections:
        problems.append("the sandbox reaches the host's loopback")
    if problems:
        sandbox.close()
        pytest.fail("SANDBOX NOT ISOLATED, destructive attacks NOT sent: " + "; ".join(problems))


@pytest.fixture(scope="module", params=["warm", "cold"])
def isolated_sandbox(request: pytest.FixtureRequest, host: Host) -> Iterator[BubblewrapSandbox]:
    """One supervisor at a time (warm: the same one throughout; cold: a new one per run),
    probed harmlessly before any attack is sent."""
    sandbox = BubblewrapSandbox(BubblewrapConfig(pool_size=1, warm=request.param == "warm"))
    probe_isolation(sandbox, host)
    yield sandbox
    sandbox.close()


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    expect: frozenset[RunStatus]
    check: Callable[[RunResult, Host], None] = lambda result, host: None
    language: str = "python"
    limits: Limits = LIMITS
    fetch: tuple[str, ...] = ()


def expect(*statuses: RunStatus) -> frozenset[RunStatus]:
    return frozenset(statuses)


def says(text: str) -> Callable[[RunResult, Host], None]:
    def check(result: RunResult, host: Host) -> None:
        assert text in result.stdout, f"expected {text!r} in stdout, got {result.stdout[-800:]!r}"

    return check


def count_at_most(limit: int) -> Callable[[RunResult, Host], None]:
    def check(result: RunResult, host: Host) -> None:
        counts = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("COUNT ")]
        assert counts, result.stdout[-500:] + result.stderr[-500:]
        assert max(counts) <= limit, f"{max(counts)} processes/threads started, limit {limit}"

    return check


def output_capped(stream: str) -> Callable[[RunResult, Host], None]:
    def check(result: RunResult, host: Host) -> None:
        text = getattr(result, stream)
        assert getattr(result, f"{stream}_truncated")
        assert len(text.encode()) <= LIMITS.max_output_bytes

    return check


def wall_within(seconds: float) -> Callable[[RunResult, Host], None]:
    def check(result: RunResult, host: Host) -> None:
        assert result.wall_time_s < seconds, result.wall_time_s

    return check


def host_marker_alive(result: RunResult, host: Host) -> None:
    assert host.marker.poll() is None, "the host's marker process was killed from inside the sandbox"
    assert "SIGNALLED" not in result.stdout, result.stdout


def no_host_connection(result: RunResult, host: Host) -> None:
    assert not host.connections, "the sandbox reached a host loopback service"
    assert "CONNECTED" not in result.stdout


def nothing_fetched(result: RunResult, host: Host) -> None:
    assert dict(result.files) == {}, f"fetched through a symlink: {list(result.files)}"


def secret_hidden(result: RunResult, host: Host) -> None:
    assert SECRET not in result.stdout + result.stderr
    assert "REWARDGYM_TEST_SECRET" not in result.stdout


def all_of(*checks: Callable[[RunResult, Host], None]) -> Callable[[RunResult, Host], None]:
    def check(result: RunResult, host: Host) -> None:
        for one in checks:
            one(result, host)

    return check


def program(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


FILL = """
import errno, os
path = '{path}'
os.makedirs(os.path.dirname(path), exist_ok=True)
written = 0
try:
    for i in range(100000):
        with open('%s.%d' % (path, i), 'wb') as f:
            for _ in range(64):
                f.write(b'x' * (1 << 16))
                written += 1 << 16
except OSError as e:
    print('STOPPED', errno.errorcode[e.errno], written >> 20, 'MiB')
"""
FORK_UNTIL_REFUSED = """
import os, time
n = 1
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print('COUNT', n)
"""
ENOSPC = "STOPPED ENOSPC"
TIMEOUT_OR_ERROR = expect(RunStatus.TIMEOUT, RunStatus.ERROR)
OK = expect(RunStatus.OK)
# Where the sandbox can hold runs to a cgroup memory limit, that limit (not malloc failing
# under an address-space limit) stops exec'd programs, and its kills read as memory.
CGROUPS = detect_layout() is not None

ATTACKS = [
    Attack("fork_bomb_python", program("""
        import os, time
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        """), TIMEOUT_OR_ERROR),
    # bash keeps retrying the fork for `sleep` while the bomb holds every pid: the wall clock ends it.
    Attack("fork_bomb_bash", ":(){ :|:& };:\nsleep 5", expect(RunStatus.TIMEOUT), language="bash"),
    Attack("process_limit_holds", program(FORK_UNTIL_REFUSED), OK, count_at_most(LIMITS.max_processes)),
    Attack("thread_bomb", program("""
        import os, threading, time
        n = 1
        try:
            while True:
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                n += 1
        except RuntimeError:
            pass
        print('COUNT', n, flush=True)
        os._exit(0)
        """), OK, count_at_most(LIMITS.max_processes)),
    Attack("infinite_loop", "while True:\n    pass", expect(RunStatus.TIMEOUT), wall_within(4.0)),
    Attack("sleep_past_wall_limit", "import time\ntime.sleep(60)", expect(RunStatus.TIMEOUT),
           wall_within(4.0)),
    Attack("cpu_time_limit", "while True:\n    pass", expect(RunStatus.TIMEOUT),
           lambda result, host: ("CPU" in result.message) or pytest.fail(result.message),
           limits=Limits(wall_time_s=10, cpu_time_s=1, memory_mb=256, max_processes=32, disk_mb=16)),
    Attack("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(8 << 20))", expect(RunStatus.MEMORY)),
    # Each child stays under the per-process limit; together they do not: the cgroup kills
    # them (memory), or without cgroups each child's MemoryError fails the run (error).
    # Timeout: slow under load.
    Attack("memory_bomb_many_processes", program("""
        import os, time
        kids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                x = bytearray(200 << 20)
                for i in range(0, len(x), 4096):
                    x[i] = 1
                time.sleep(0.5)
                os._exit(0)
            kids.append(pid)
        codes = [os.waitpid(k, 0)[1] for k in kids]
        print(codes)
        raise SystemExit(1 if any(codes) else 0)
        """), expect(RunStatus.MEMORY if CGROUPS else RunStatus.ERROR, RunStatus.TIMEOUT),
        lambda result, host: "[0, 0, 0, 0, 0, 0, 0, 0]" not in result.stdout or pytest.fail("1.6 GB fit")),
    Attack("memory_bomb_c", program("""
        #include <stdlib.h>
        #include <string.h>
        int main(void) {
            for (;;) {
                char *p = malloc(1 << 24);
                if (!p) return 3;
                memset(p, 1, 1 << 24);
            }
        }
        """), expect(RunStatus.MEMORY if CGROUPS else RunStatus.ERROR), language="c"),
    Attack("giant_stdout", "while True:\n    print('x' * 1000)", expect(RunStatus.OUTPUT_LIMIT),
           output_capped("stdout")),
    Attack("giant_stderr", "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)",
           expect(RunStatus.OUTPUT_LIMIT), output_capped("stderr")),
    Attack("disk_fill_workdir", FILL.format(path="/work/fill/f"), OK, says(ENOSPC)),
    Attack("disk_fill_tmp", FILL.format(path="/tmp/fill/f"), OK, says(ENOSPC)),
    Attack("disk_fill_dev_shm", FILL.format(path="/dev/shm/fill/f"), OK, says(ENOSPC)),
    Attack("single_file_past_size_limit", program("""
        import errno
        try:
            with open('big', 'wb') as f:
                for _ in range(64):
                    f.write(b'x' * (1 << 20))
        except OSError as e:
            print('STOPPED', errno.errorcode[e.errno])
        """), OK, says("STOPPED EFBIG"),
        limits=Limits(wall_time_s=2, memory_mb=256, max_file_bytes=4 << 20, disk_mb=32)),
    Attack("outbound_network", program("""
        import socket
        print(sorted(name for _, name in socket.if_nameindex()))
        try:
            socket.create_connection(('93.184.216.34', 80), timeout=1)
            print('CONNECTED')
        except OSError as e:
            print('BLOCKED', e)
        """), OK, all_of(says("BLOCKED"), says("['lo']"))),
    Attack("loopback_to_host_service", program("""
        import socket, sys
        try:
            socket.create_connection(('127.0.0.1', int(sys.argv[4])), timeout=1)
            print('CONNECTED')
        except OSError as e:
            print('BLOCKED', e)
        """), OK, all_of(says("BLOCKED"), no_host_connection)),
    Attack("dns_lookup", program("""
        import socket
        try:
            socket.getaddrinfo('pypi.org', 443)
            print('RESOLVED')
        except OSError as e:
            print('BLOCKED', e)
        """), OK, says("BLOCKED")),
    Attack("read_host_files", program("""
        import os, sys
        for path in ['/etc/shadow', '/etc/passwd', '/root/.bashrc', '/root/.ssh', '/home', sys.argv[2],
                     '/var/log', '/etc/hostname']:
            print('VISIBLE' if os.path.exists(path) else 'absent', path)
        """), OK, lambda result, host: "VISIBLE" not in result.stdout or pytest.fail(result.stdout)),
    Attack("environment_variables", program("""
        import os
        print(dict(os.environ))
        for pid in os.listdir('/proc'):
            if pid.isdigit():
                try:
                    print(open('/proc/%s/environ' % pid, 'rb').read())
                except OSError as e:
                    print(pid, 'unreadable', e.errno)
        """), OK, secret_hidden),
    Attack("write_outside_workdir", program("""
        import os, sys
        for path in ['/usr/lib/evil', '/etc/evil', '/evil', sys.executable + '.evil', '/proc/evil',
                     '/dev/evil', '/lib/evil', '/root/evil']:
            try:
                open(path, 'w').write('x')
                print('WROTE', path)
            except OSError as e:
                print('refused', path, e.errno)
        """), OK, lambda result, host: "WROTE" not in result.stdout or pytest.fail(result.stdout)),
    Attack("symlink_escape_through_fetch", program("""
        import os
        os.symlink('/etc/passwd', 'out')
        os.symlink('/usr/bin/python3', 'py')
        os.symlink('/', 'root')
        """), OK, nothing_fetched, fetch=("out", "py", "root")),
    Attack("signal_host_processes", program("""
        import os, signal, sys
        try:
            os.kill(int(sys.argv[3]), signal.SIGKILL)
            print('SIGNALLED host pid')
        except OSError as e:
            print('refused', e)
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        """), expect(RunStatus.OK, RunStatus.ERROR), host_marker_alive),
    Attack("ptrace_other_processes", program("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for pid in os.listdir('/proc'):
            if pid.isdigit() and int(pid) != os.getpid():
                attached = libc.ptrace(16, int(pid), 0, 0) == 0  # PTRACE_ATTACH
                print('ATTACHED' if attached else 'refused', pid, ctypes.get_errno())
        """), OK, lambda result, host: "ATTACHED" not in result.stdout or pytest.fail(result.stdout)),
    Attack("orphan_daemon", program("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        print('parent done')
        """), OK, wall_within(1.5)),
    Attack("orphan_holding_stdout", program("""
        import subprocess
        subprocess.Popen(['sleep', '600'])
        print('parent done')
        """), OK, wall_within(1.5)),
    Attack("kill_everything_visible", program("""
        import os, signal
        for pid in os.listdir('/proc'):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        os.kill(os.getppid(), signal.SIGKILL)
        print('still here')
        """), expect(RunStatus.OK, RunStatus.ERROR)),
    Attack("privileges_and_mounts", program("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        status = open('/proc/self/status').read().splitlines()
        print([line for line in status if line.startswith(('CapEff', 'CapBnd', 'NoNewPrivs'))])
        print('MOUNTED' if libc.mount(b'tmpfs', b'/usr', b'tmpfs', 0, None) == 0 else 'mount refused')
        try:
            os.setuid(4242)
            print('SETUID')
        except OSError as e:
            print('setuid refused', e)
        """), OK, all_of(says("'CapEff:\\t0000000000000000'"), says("'NoNewPrivs:\\t1'"),
                         says("mount refused"), says("setuid refused"))),
    Attack("devices", program("""
        for path in ['/dev/mem', '/dev/kmsg', '/dev/sda', '/dev/vda', '/dev/port']:
            try:
                open(path, 'rb').read(1)
                print('OPENED', path)
            except OSError as e:
                print('refused', path, e.errno)
        """), OK, lambda result, host: "OPENED" not in result.stdout or pytest.fail(result.stdout)),
    Attack("closed_fds_then_spin", "import os\nos.close(1)\nos.close(2)\nwhile True:\n    pass",
           expect(RunStatus.TIMEOUT), wall_within(4.0)),
    Attack("invalid_utf8_output", "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe\\n')", OK,
           says("ok \ufffd\ufffd")),
]  # fmt: skip


def _attack_request(attack: Attack, host: Host) -> RunRequest:
    """argv: 1, the repo path, the host marker's pid, the host's loopback port."""
    return RunRequest(
        code=attack.code,
        language=attack.language,
        args=("1", host.repo, str(host.marker.pid), str(host.port)),
        limits=attack.limits,
        fetch_files=attack.fetch,
    )


def _assert_contained(sandbox: BubblewrapSandbox, attack: Attack, result: RunResult, host: Host) -> None:
    assert result.status in attack.expect, (
        f"{attack.name}: status {result.status} ({result.message}), expected one of "
        f"{sorted(attack.expect)}\nstdout: {result.stdout[-500:]}\nstderr: {result.stderr[-800:]}"
    )
    attack.check(result, host)
    assert host.marker.poll() is None, "the host's marker process died"
    assert sandbox.leftover_processes() == [], f"{attack.name} left processes running"


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(isolated_sandbox: BubblewrapSandbox, host: Host, attack: Attack) -> None:
    before = _host_files()
    result = isolated_sandbox.run_sync(_attack_request(attack, host))
    _assert_contained(isolated_sandbox, attack, result, host)
    assert _host_files() - before == set(), "files appeared on the host"
    after = isolated_sandbox.run_sync(RunRequest(code="print('next run works')", limits=LIMITS))
    assert after.status is RunStatus.OK and after.stdout == "next run works\n", after


def test_the_checklist_has_at_least_25_attacks() -> None:
    assert len(ATTACKS) >= 25
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


def test_attacks_run_concurrently_are_all_contained(host: Host) -> None:
    """Every attack at once on a pool of warm supervisors: cleanup races would show here."""
    sandbox = BubblewrapSandbox(BubblewrapConfig(pool_size=3))
    probe_isolation(sandbox, host)
    before = _host_files()

    async def all_attacks() -> list[RunResult]:
        return await asyncio.gather(*[sandbox.run(_attack_request(a, host)) for a in ATTACKS])

    try:
        results = asyncio.run(all_attacks())
        for attack, result in zip(ATTACKS, results, strict=True):
            _assert_contained(sandbox, attack, result, host)
        assert _host_files() - before == set()
        assert sandbox.run_sync(RunRequest(code="print(6 * 7)")).stdout == "42\n"
    finally:
        sandbox.close()


def test_state_does_not_survive_into_the_next_run(isolated_sandbox: BubblewrapSandbox) -> None:
    """Same warm supervisor, two runs: files, symlinks planted for later, SysV IPC and
    interpreter state from the first are all gone in the second."""
    plant = (
        "import builtins, ctypes, os\nopen('/tmp/left', 'w').write('x')\nopen('/work/left', 'w').write('x')\n"
        "os.symlink('/usr/bin/python3', '/tmp/planted')\nos.symlink('/etc', '/work/planted')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\nprint('shm', libc.shmget(4242, 4096, 0o1666))\n"
        "builtins.LEFT = 1\nimport json\njson.dumps = None"
    )
    first = isolated_sandbox.run_sync(RunRequest(code=plant, limits=LIMITS))
    assert first.status is RunStatus.OK, first
    assert "shm -1" not in first.stdout
    look = (
        "import builtins, ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/work')), libc.shmget(4242, 4096, 0),"
        " hasattr(builtins, 'LEFT'), json.dumps(1))"
    )
    second = isolated_sandbox.run_sync(RunRequest(code=look, files={"planted": b"fresh"}, limits=LIMITS))
    assert second.status is RunStatus.OK, second
    assert second.stdout == "[] ['main.py', 'planted'] -1 False 1\n"


def test_concurrent_runs_do_not_see_each_other(host: Host) -> None:
    sandbox = BubblewrapSandbox(BubblewrapConfig(pool_size=2))
    writer = program("""
        import time
        open('/tmp/secret', 'w').write('s')
        open('/dev/shm/secret', 'w').write('s')
        time.sleep(1)
        """)
    reader = program("""
        import os, time
        time.sleep(0.3)
        print(os.path.exists('/tmp/secret'), os.path.exists('/dev/shm/secret'))
        """)

    async def both() -> list[RunResult]:
        return await asyncio.gather(*(sandbox.run(RunRequest(code=code)) for code in (writer, reader)))

    try:
        wrote, read = asyncio.run(both())
        assert wrote.status is RunStatus.OK and read.status is RunStatus.OK
        assert read.stdout == "False False\n"
    finally:
        sandbox.close()


def _cgroup_dirs(sandbox: BubblewrapSandbox) -> set[Path]:
    layout = sandbox.cgroup_layout
    if layout is None:
        return set()
    mine = f"sandbox-{os.getpid()}-*"  # other processes on the machine may be running sandboxes too
    return {*layout.pids_parent.glob(mine), *layout.memory_parent.glob(mine)}


def test_cold_sandbox_contains_a_fork_bomb_and_leaves_no_cgroup(
    isolated_sandbox: BubblewrapSandbox, host: Host
) -> None:
    isolated_sandbox.wait_for_cleanup()
    before = _cgroup_dirs(isolated_sandbox)
    sandbox = BubblewrapSandbox(BubblewrapConfig(warm=False, pool_size=1))
    try:
        bomb = next(a for a in ATTACKS if a.name == "fork_bomb_python")
        result = sandbox.run_sync(_attack_request(bomb, host))
        assert result.status in bomb.expect, result
        assert sandbox.leftover_processes() == []
        assert _cgroup_dirs(sandbox) == before, "a cold run left its cgroup behind"
    finally:
        sandbox.close()
    assert _cgroup_dirs(sandbox) == before

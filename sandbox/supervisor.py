"""The supervisor: the one program that runs *inside* the sandbox.

Standard library only, and it never imports rewardgym: the host hands it over (as a
code object, or as source to another Python version), so it works with any Python 3.8+
the sandbox can see. Requests come from the host as length-prefixed marshal; reports go
back as length-prefixed JSON.

Three modes, chosen by the host's config:

- "warm": a long-lived, pre-imported interpreter. For each request it forks a runner
  that enters fresh namespaces (user, mount, PID, IPC): a new tmpfs at /work, /tmp
  and /dev/shm and a new PID 1 (the run's init) whose exit takes every process of the
  run with it. The program is forked by that init with capabilities dropped. Nothing of
  one run survives into the next.

      supervisor ─ fork ─> runner (unshares) ─ fork ─> init (PID 1) ─ fork ─> program (PID 2)

- "cold": one request, then exit. bubblewrap made fresh namespaces and tmpfs dirs for
  this run alone and the supervisor is PID 1 (`--as-pid-1`), so it is the run's init
  itself: no extra forks, no ctypes.
- "unisolated": the explicit unsafe opt-in. A fresh work dir per run, rlimits and the
  wall clock; no namespaces.

The init writes the files, runs the compile step and the program under rlimits, reads
their output with a cap, enforces the wall clock, fetches the requested files and
reports back.
"""

# Imports are kept few and cheap (no json, re, enum, socket): a cold run pays for each one.
import _signal as signal
import binascii
import errno
import marshal
import os
import resource
import select
import struct
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV = 0x2, 0x4
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
CAP_VERSION_3 = 0x20080522
MIB = 1 << 20

_LIBC = []


def libc():
    """libc through ctypes, imported on first use (a cold run never needs it)."""
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _check(result, what):
    if result != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


# -- wire ----------------------------------------------------------------------------


def recv_message(sock):
    """One length-prefixed message. Host to supervisor: marshal (the host is trusted, and
    json would cost a cold start 5 ms of imports). Supervisor to host: JSON (the host never
    unmarshals anything that came out of a sandbox). Host side passes a socket, the
    supervisor a raw fd."""
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    body = _recv_exact(sock, size)
    if body is None:
        return None
    if isinstance(sock, int):
        return marshal.loads(body)
    import json

    return json.loads(body)


def _recv_exact(sock, size):
    chunks, got = [], 0
    while got < size:
        want = min(size - got, 1 << 20)
        chunk = os.read(sock, want) if isinstance(sock, int) else sock.recv(want)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send_message(sock, message):
    if isinstance(sock, int):
        body = to_json(message).encode("utf-8", "replace")
        _write_all(sock, struct.pack(">I", len(body)) + body)
    else:
        body = marshal.dumps(message, 2)
        sock.sendall(struct.pack(">I", len(body)) + body)


_JSON_ESCAPES = {i: "\\u%04x" % i for i in range(32)}
_JSON_ESCAPES.update({ord("\\"): "\\\\", ord('"'): '\\"'})


def to_json(value):
    """JSON for the report's plain types (dict, list, str, int, float, bool, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return '"' + value.translate(_JSON_ESCAPES) + '"'
    if isinstance(value, (int, float)):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) else "null"
    if isinstance(value, dict):
        return "{" + ",".join(to_json(str(k)) + ":" + to_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return to_json(repr(value))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except InterruptedError:
            continue


def b64(data):
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def unb64(text):
    return binascii.a2b_base64(text)


# -- namespaces and privileges -------------------------------------------------------


def enter_run_namespaces():
    """Called in the runner: fresh user/mount/PID/IPC namespaces, root inside only."""
    uid, gid = os.getuid(), os.getgid()
    # The supervisor is not dumpable, which makes /proc/self root-owned; as a non-root
    # uid the runner could then not write its own uid_map. The run is dumpable again.
    libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    # No new UTS namespace: the program has no capability over bwrap's, so it cannot rename it.
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
    _check(libc().unshare(flags), "unshare")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write("0 %d 1" % uid)
    with open("/proc/self/gid_map", "w") as f:
        f.write("0 %d 1" % gid)


def mount_private_dirs(limits, dirs):
    """Called in the run's init: a fresh size-limited tmpfs on each private dir."""
    # No need to make "/" private first: a mount namespace owned by a new user namespace
    # gets shared mounts as slaves, so nothing mounted here propagates back.
    options = ("size=%dm,mode=1777" % limits["disk_mb"]).encode()
    for path in dirs:
        flags = MS_NOSUID | MS_NODEV
        _check(libc().mount(b"tmpfs", path.encode(), b"tmpfs", flags, options), "mount " + path)


def drop_privileges():
    """The program keeps no capabilities, cannot regain any through exec, and cannot be ptraced
    by anything but its own ancestors."""
    cap = 0
    while libc().prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    import ctypes

    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc().capset(header, data), "capset")
    _check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def set_limits(limits, processes, address_space=True):
    """rlimits for the program. `processes` is None where RLIMIT_NPROC would count the host
    user's own processes too (no user namespace), so it is left alone there.
    `address_space`: bound it by memory_mb (off for exec'd programs where a cgroup memory
    limit holds: malloc would fail first, and the run would end as an error, not memory)."""
    cpu = max(1, int(limits["cpu_time_s"] + 0.999))
    memory = limits["memory_mb"] * MIB
    for which, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory, memory) if address_space else None),
        (resource.RLIMIT_FSIZE, (limits["max_file_bytes"], limits["max_file_bytes"])),
        (resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"])),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_STACK, (min(memory, 8 * MIB), min(memory, 8 * MIB))),
    ):
        if value is not None:
            resource.setrlimit(which, value)
    if processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


# -- one program ---------------------------------------------------------------------


class StepResult:
    """The outcome of one program (compile step or main run), built by the run's init."""

    def __init__(self):
        self.status = "ok"
        self.exit_code = None
        self.signal = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_truncated = False
        self.stderr_truncated = False
        self.wall = 0.0
        self.cpu = 0.0
        self.peak_kb = 0
        self.message = ""

    def as_dict(self):
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout": b64(bytes(self.stdout)),
            "stderr": b64(bytes(self.stderr)),
            "stdout_truncated": self.stdout_truncated,
            "stderr_truncated": self.stderr_truncated,
            "wall_time_s": self.wall,
            "cpu_time_s": self.cpu,
            "peak_memory_kb": self.peak_kb,
            "message": self.message,
        }


def run_program(step, limits, workdir, env, mode, memory_cgroup=False):
    """Fork the program, feed stdin, collect capped output, enforce wall and output limits.

    `step` is {"argv": [...]} to exec, or {"python": "main.py", "args": [...]} to run the
    file in a forked copy of this (already started) interpreter. `memory_cgroup`: the host
    holds the run to a cgroup memory limit (then an exec'd program gets no address-space
    limit; the cgroup's kill is reported as memory).
    """
    result = StepResult()
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    note_r, note_w = os.pipe()  # the program's own note on how it ended ("memory")
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the program
        try:
            os.dup2(stdin_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (stdin_r, stdin_w, out_r, out_w, err_r, err_w, note_r):
                os.close(fd)
            os.closerange(3, note_w)
            os.closerange(note_w + 1, 1 << 16)
            os.chdir(workdir)
            if mode == "warm":  # cold: bwrap already dropped every capability
                drop_privileges()
            processes = limits["max_processes"] if mode != "unisolated" else None
            set_limits(limits, processes, address_space="python" in step or not memory_cgroup)
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("1000")  # under memory pressure, the program goes first
            except OSError:
                pass
            if "python" in step:
                _exec_python_in_process(step, env, note_w)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # exec'd programs get defaults
                signal.signal(sig, signal.SIG_DFL)
            os.execvpe(step["argv"][0], step["argv"], env)
        except BaseException as exc:  # report and leave the fork, whatever happened
            try:
                os.write(2, ("sandbox: cannot start program: %r\n" % (exc,)).encode())
            finally:
                os._exit(127)
    for fd in (stdin_r, out_w, err_w, note_w):
        os.close(fd)
    _pump(pid, result, step, limits, started, stdin_w, out_r, err_r)
    note = _read_all(note_r)
    if note == b"memory" and result.status in ("ok", "error"):
        result.status = "memory"
        result.message = "MemoryError: the program ran out of its %d MiB" % limits["memory_mb"]
    return result


def _exec_python_in_process(step, env, note_fd):
    """Run a Python file as __main__ in this forked interpreter, then exit like python does."""
    import atexit

    os.environ.clear()
    os.environ.update(env)
    path = os.path.abspath(step["python"])
    sys.argv = [step["python"], *step.get("args", [])]
    sys.path[0:0] = [os.path.dirname(path)]
    main = type(sys)("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    code = 0
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit as exc:
        code = _exit_code_of(exc)
    except MemoryError:
        os.write(note_fd, b"memory")
        _print_exception()
        code = 1
    except BaseException:  # python's own top-level behaviour: print and exit 1
        _print_exception()
        code = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # wait for non-daemon threads, as the interpreter would
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # exit handlers may fail like anywhere else
        code = code or 1
    os._exit(code)


def _print_exception():
    import traceback

    traceback.print_exc()


def _exit_code_of(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _pump(pid, result, step, limits, started, stdin_w, out_r, err_r):
    cap = limits["max_output_bytes"]
    deadline = started + limits["wall_time_s"]
    stdin_data = memoryview(unb64(step.get("stdin", "")))
    readers = {out_r: ("stdout", result.stdout), err_r: ("stderr", result.stderr)}
    writers = [stdin_w] if stdin_data else []
    if not stdin_data:
        os.close(stdin_w)
    else:
        os.set_blocking(stdin_w, False)
    exited, status, usage = False, 0, None
    pidfd = os.pidfd_open(pid)  # readable once the program has exited: no polling
    while True:
        if not exited:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                exited = True
                result.wall = time.monotonic() - started
                os.close(pidfd)
                _kill_everything_else()  # orphans go with the program; the pipes then drain
        now = time.monotonic()
        if exited and (not readers or now >= deadline + 1.0):
            break  # unisolated runs only: an orphan holding a pipe past the deadline is abandoned
        if not exited and now >= deadline:
            result.status = "timeout"
            result.message = "wall-clock limit of %gs reached" % limits["wall_time_s"]
            status, usage = _kill_run(pid)
            exited, result.wall = True, time.monotonic() - started
            os.close(pidfd)
            continue
        watched = list(readers) if exited else [*readers, pidfd]
        ready_r, ready_w, _ = select.select(watched, writers, [], 1.0 if exited else min(0.1, deadline - now))
        if not exited:
            _reap_orphans(pid)
        for fd in ready_w:
            try:
                sent = os.write(fd, stdin_data[:65536])
                stdin_data = stdin_data[sent:]
            except BrokenPipeError:
                stdin_data = stdin_data[:0]
            if not stdin_data:
                writers.remove(fd)
                os.close(fd)
        for fd in ready_r:
            if fd == pidfd:
                continue
            name, buffer = readers[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                del readers[fd]
                os.close(fd)
                continue
            room = cap - len(buffer)
            buffer += chunk[: max(room, 0)]
            if len(chunk) > room:
                setattr(result, name + "_truncated", True)
                if result.status == "ok":
                    result.status = "output-limit"
                    result.message = "%s passed the %d-byte limit" % (name, cap)
                if not exited:  # the rest of its output would be thrown away: stop it now
                    status, usage = _kill_run(pid)
                    exited, result.wall = True, time.monotonic() - started
                    os.close(pidfd)
    for fd in [*writers, *readers]:
        os.close(fd)
    _record_exit(result, status, usage, limits)


def _kill_run(pid):
    """Kill the program and everything it started; return its (status, rusage)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status, usage = os.wait4(pid, 0)  # before any reaping of others, which could take it
    _kill_everything_else()
    return status, usage


def _kill_everything_else():
    """As the run's PID 1, kill(-1) reaches every process of the run and nothing outside it.
    Repeated until nothing is left to signal, so a fork bomb cannot outrun one pass."""
    if os.getpid() != 1:
        return
    for _ in range(1000):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            break
        _reap()


def _reap_orphans(program):
    """As PID 1, reap orphans of the program as they die, so zombies do not hold on to
    pids.max while the program runs. The program itself is left for wait4."""
    if os.getpid() != 1:
        return
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == program:
            return
        os.waitpid(info.si_pid, 0)


def _reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            return


def _record_exit(result, status, usage, limits):
    if usage is not None:
        result.cpu = usage.ru_utime + usage.ru_stime
        result.peak_kb = usage.ru_maxrss
    if os.WIFSIGNALED(status):
        result.signal = os.WTERMSIG(status)
        result.exit_code = -result.signal
    else:
        result.exit_code = os.WEXITSTATUS(status)
    if result.status != "ok":
        return
    if result.signal in (signal.SIGXCPU,) or (
        result.signal == signal.SIGKILL and result.cpu >= limits["cpu_time_s"]
    ):
        result.status = "timeout"
        result.message = "CPU-time limit of %gs reached" % limits["cpu_time_s"]
    elif result.exit_code != 0:
        result.status = "error"
        if result.signal is not None:
            result.message = "killed by signal %d (%s)" % (result.signal, signal.strsignal(result.signal))
        else:
            result.message = "exited with status %d" % result.exit_code


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


# -- one run -------------------------------------------------------------------------


def execute(request, mode):
    """The run's init: private dirs, files, compile, run, fetch. Returns the report."""
    limits = request["limits"]
    workdir = request["workdir"]
    if mode == "warm":
        mount_private_dirs(limits, request["private_dirs"])
    elif mode == "unisolated":  # a fresh dir per run under the host's, removed afterwards
        workdir = os.path.join(workdir, "run-%d" % os.getpid())
        os.makedirs(workdir)
    try:
        _write_files(workdir, request["files"])
        request["files"] = {}  # the program is forked from here: it gets no copy of the payload
        env = request["env"]
        memory_cgroup = request.get("memory_cgroup", False)
        report = {"status": "ok"}
        compile_step = request.get("compile")
        if compile_step is not None:
            compiled = run_program(compile_step, compile_step["limits"], workdir, env, mode, memory_cgroup)
            report["compile"] = compiled.as_dict()
            if compiled.status != "ok":
                report["status"] = "compile-failed"
                return report
        main = run_program(request["run"], limits, workdir, env, mode, memory_cgroup)
        report["run"] = main.as_dict()
        report["files"] = _fetch_files(workdir, request["fetch"], limits["max_file_bytes"])
        return report
    finally:
        if mode == "unisolated":
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def execute_to_json(request, mode):
    try:
        return to_json(execute(request, mode))
    except BaseException as exc:  # every failure here is the sandbox's, reported as such
        return to_json({"status": "sandbox-error", "message": "%s: %s" % (type(exc).__name__, exc)})


def _write_files(workdir, files):
    for rel, data in files.items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        with os.fdopen(fd, "wb") as f:
            f.write(unb64(data))


def _fetch_files(workdir, names, max_bytes):
    """Regular files only, never through a symlink; missing ones are left out, and so is
    any file past a total of 4 x max_bytes (hard links can repeat one big file)."""
    fetched = {}
    budget = 4 * max_bytes
    for rel in names:
        path = os.path.join(workdir, rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            data = f.read(min(max_bytes, budget))
            budget -= len(data)
            if budget <= 0:
                break
            fetched[rel] = b64(data)
    return fetched


def _write_report(fd, report_json):
    _write_all(fd, report_json.encode("utf-8", "replace"))
    os.close(fd)


def handle_in_fresh_namespaces(request, mode):
    """Fork the runner, which forks the run's init; return the init's report (JSON text)."""
    report_r, report_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    runner = os.fork()
    if runner == 0:
        try:
            os.close(report_r)
            os.setpgid(0, 0)
            if mode == "warm":
                enter_run_namespaces()
            init = os.fork()
            if init == 0:
                try:
                    _write_report(report_w, execute_to_json(request, mode))
                finally:
                    os._exit(0)
            os.close(report_w)
            _, status = os.waitpid(init, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        except BaseException as exc:  # tell the supervisor, then leave the fork
            try:
                message = "runner: %r" % (exc,)
                _write_report(report_w, to_json({"status": "sandbox-error", "message": message}))
            finally:
                os._exit(1)
    os.close(report_w)
    deadline = time.monotonic() + request["deadline_s"]
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            _killpg(runner)
            break
        ready, _, _ = select.select([report_r], [], [], left)
        if ready:
            chunk = os.read(report_r, 1 << 20)
            if not chunk:
                break
            data += chunk
    os.close(report_r)
    # The runner exits once the init has, and the init's exit waits for the kernel to kill
    # every process of its PID namespace: after this, nothing of the run is left.
    runner_fd = os.pidfd_open(runner)
    if not select.select([runner_fd], [], [], max(deadline + 2.0 - time.monotonic(), 0.5))[0]:
        _killpg(runner)
    os.close(runner_fd)
    os.waitpid(runner, 0)
    if not data:
        return to_json({"status": "sandbox-error", "message": "the run gave no report before its deadline"})
    return data.decode("utf-8", "replace")  # the init's JSON, relayed as is


def _killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(in_fd, out_fd, mode, one_shot):
    send_message(out_fd, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        request = recv_message(in_fd)
        if request is None:
            return
        if one_shot:  # cold: this process is the run's init
            report = execute_to_json(request, mode)
        else:
            try:
                report = handle_in_fresh_namespaces(request, mode)
            except Exception as exc:  # keep serving; the host sees a sandbox-error
                message = "supervisor: %s: %s" % (type(exc).__name__, exc)
                report = to_json({"status": "sandbox-error", "message": message})
        body = report.encode("utf-8", "replace")
        _write_all(out_fd, struct.pack(">I", len(body)) + body)
        if one_shot:
            return


def main(in_fd, out_fd):
    """Serve the host: requests come on `in_fd`, reports go to `out_fd` (the same socket
    for local backends; stdin/stdout where only those reach the host). The first message is
    the config: mode, one_shot, site_packages, sys_path, preload."""
    config = recv_message(in_fd)
    if config is None:
        return
    if config.get("site_packages"):
        import site  # started with -S: add site-packages without running .pth hooks

        config["sys_path"] = site.getsitepackages() + config["sys_path"]
    for path in config["sys_path"]:
        if path not in sys.path:
            sys.path.append(path)
    for name in config["preload"]:
        __import__(name)  # a warm interpreter pays for common imports once, not per run
    # Not dumpable: the program (same uid, no capabilities) cannot ptrace us, open our /proc
    # files or take our fds to forge a report. Worth the ctypes import even when cold.
    libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        serve(in_fd, out_fd, config["mode"], config["one_shot"])
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise


# The host starts the supervisor with this instead of the whole source: it reads the
# supervisor's code object (or source, for another Python version) from the host, so a
# cold start neither compiles nor ships 20 KB of source through argv.
BOOTSTRAP = """
import marshal, os, sys
i, o = int(sys.argv[1]), int(sys.argv[2])
os.write(o, ('%d.%d\\n' % sys.version_info[:2]).encode())
def read(n):
    b = b''
    while len(b) < n:
        c = os.read(i, n - len(b))
        if not c:
            raise SystemExit(0)
        b += c
    return b
code = marshal.loads(read(int.from_bytes(read(4), 'big')))
g = {'__name__': 'rewardgym_supervisor', '__builtins__': __builtins__}
exec(compile(code, 'supervisor.py', 'exec') if isinstance(code, str) else code, g)
g['main'](i, o)
"""


if __name__ == "__main__":
    fds = [int(arg) for arg in sys.argv[1:3]]
    main(fds[0], fds[-1])

"""The test driver: the program that runs *inside* the sandbox to test one solution.

Standard library only, and it never imports rewardgym: the harness ships this file's source
into the sandbox as the program to run (see `rewards.code_tests`). Importing it runs
nothing, so its pieces (`normalize_output`) can be tested on the host.

The driver reads `tests.json` (and deletes it), then runs each test in a process of its own:
a fresh interpreter (`python -I -S -c <this source> child`), so a test sees none of the
driver's memory (no expected outputs, no other tests), or the compiled program for C/C++
stdin/stdout tests. The driver itself never runs the solution. It feeds the test its
instructions on one pipe and reads the verdict from another; the test's stdout and stderr go
to pipes of their own. It enforces the per-test timeout, then kills everything the test left
behind, and writes one JSON line per event on its own stdout, which no test process can
reach (their fds are closed, and the driver is not dumpable, so /proc/<driver>/fd is closed
to them).

Verdicts. An assert-style test passes only if its process reports success, with this test's
token, *after* the test code ran: `sys.exit(0)` or `os._exit(0)` in the solution fails the
test, and a verdict printed to stdout is just output. A stdin/stdout test passes if the program exits with
status 0 and its output equals the expected output up to line endings and trailing
whitespace. What this does not stop: code that deliberately digs the verdict pipe and token
out of its own process (code in the same process as its test can always fake that test), or
return values that compare equal to anything. Stdin/stdout tests have no such gap.

Events, one JSON object per line: {"event": "start"}, {"event": "compiled", "ok", "reason"},
{"event": "begin", "index"}, {"event": "result", "index", "passed", "reason", "time_s"},
{"event": "done"}. A run that stops between "begin" and "result" was stopped by that test.
"""

import contextlib
import json
import os
import sys
import time

SPEC_FILE = "tests.json"
REASON_CHARS = 400
SHOW_CHARS = 80
TAIL_KEEP = 4096
CATCHABLE_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE")
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


def normalize_output(text):
    """Output as compared: universal newlines, no trailing whitespace on any line, no
    trailing blank lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def describe_mismatch(expected, got):
    """'wrong output' with the first line that differs, both sides shortened."""
    want, have = expected.split("\n"), got.split("\n")
    for number in range(max(len(want), len(have))):
        w = want[number] if number < len(want) else None
        h = have[number] if number < len(have) else None
        if w != h:
            break
    if h is None:
        return f"wrong output: line {number + 1}: expected {_show(w)}, got no more output"
    if w is None:
        return f"wrong output: line {number + 1}: expected no more output, got {_show(h)}"
    return f"wrong output: line {number + 1}: expected {_show(w)}, got {_show(h)}"


def _show(text):
    return repr(text) if len(text) <= SHOW_CHARS else repr(text[:SHOW_CHARS]) + "..."


def _shorten(text, limit=REASON_CHARS):
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the driver ------------------------------------------------------------------------------


def drive():
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no test process may open our /proc entries
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of a test come back to us, to be reaped
    for name in CATCHABLE_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    with open(SPEC_FILE, "rb") as f:
        spec = json.loads(f.read().decode("utf-8"))
    os.unlink(SPEC_FILE)
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        own_source = f.read()  # read now: a test could rewrite the file later
    emit({"event": "start", "python": sys.version.split()[0]})
    limits = spec["limits"]
    run_argv = spec.get("run")
    if spec.get("compile"):
        ok, reason = compile_solution(spec["compile"], limits)
        emit({"event": "compiled", "ok": ok, "reason": reason})
        if not ok:
            return
    python = [sys.executable, "-I", "-S", "-B", "-c", own_source, "child"]
    for index, test in enumerate(spec["tests"]):
        emit({"event": "begin", "index": index})
        started = time.monotonic()
        try:
            if test["kind"] == "io" and run_argv:
                passed, reason = run_io_program(run_argv, test, limits)
            else:
                passed, reason = run_in_child(python, spec, test, limits)
        except OSError as exc:  # no process or pipe to be had: what earlier tests left holds them
            passed, reason = False, _shorten(f"the test could not be started: {exc}")
        elapsed = round(time.monotonic() - started, 4)
        emit({"event": "result", "index": index, "passed": passed, "reason": reason, "time_s": elapsed})
    emit({"event": "done"})


def emit(event):
    data = (json.dumps(event) + "\n").encode("utf-8")
    while data:
        data = data[os.write(1, data) :]


def compile_solution(argv, limits):
    outcome = run_process(argv, b"", None, limits["compile_timeout_s"], None, limits, "compile")
    if outcome.timed_out:
        return False, f"compilation failed: the compiler took longer than {limits['compile_timeout_s']:g}s"
    if outcome.exit_status != 0:
        errors = [line for line in outcome.stderr_text().splitlines() if "error" in line]
        detail = errors[0] if errors else outcome.stderr_text().strip()[-300:] or outcome.ending()
        return False, _shorten("compilation failed: " + detail)
    return True, ""


def run_in_child(python, spec, test, limits):
    """A Python test in a fresh interpreter: an assert test, or the solution fed stdin."""
    token = os.urandom(12).hex()
    instructions = {
        "kind": test["kind"],
        "prelude": spec.get("prelude", ""),
        "solution": spec["solution"],
        "test": test.get("code", ""),
        "token": token,
    }
    feed = test.get("input", "").encode("utf-8")
    payload = json.dumps(instructions).encode("utf-8")
    outcome = run_process(
        python, feed, payload, limits["timeout_s"], limits["memory_mb"], limits, test["kind"]
    )
    if test["kind"] == "io":
        return judge_output(outcome, test, limits)
    report = outcome.report_json()
    if report is not None and report.get("token") == token:
        if report.get("ok") is True:
            return True, ""
        return False, _shorten(str(report.get("reason") or "the test failed"))
    if outcome.timed_out:
        return False, f"timeout: no result within {limits['timeout_s']:g}s"
    if outcome.report:
        return False, "the test process sent a verdict that is not the driver's (a forged verdict?)"
    return False, _shorten(f"the process {outcome.ending()} before the test finished{outcome.stderr_tail()}")


def run_io_program(argv, test, limits):
    """A compiled program fed the test's stdin."""
    feed = test.get("input", "").encode("utf-8")
    outcome = run_process(argv, feed, None, limits["timeout_s"], limits["memory_mb"], limits, "io")
    return judge_output(outcome, test, limits)


def judge_output(outcome, test, limits):
    if outcome.timed_out:
        return False, f"timeout: no result within {limits['timeout_s']:g}s"
    if outcome.output_overflow:
        return False, f"output limit: more than {limits['max_output_bytes']} bytes on stdout"
    if outcome.exit_status != 0:
        return False, _shorten(f"runtime error: {outcome.ending()}{outcome.stderr_tail()}")
    got = normalize_output(outcome.stdout.decode("utf-8", "replace"))
    expected = normalize_output(test["output"])
    if got == expected:
        return True, ""
    return False, describe_mismatch(expected, got)


class Outcome:
    """How one test process ended, and what it wrote."""

    def __init__(self):
        self.timed_out = False
        self.output_overflow = False
        self.exit_status = None  # None: killed by a signal, or by the driver once the test was over
        self.signal = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.report = bytearray()

    def report_json(self):
        try:
            value = json.loads(self.report.decode("utf-8"))
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def stderr_text(self):
        return self.stderr.decode("utf-8", "replace")

    def stderr_tail(self):
        lines = [line for line in self.stderr_text().splitlines() if line.strip()]
        return ": " + lines[-1].strip() if lines else ""

    def ending(self):
        import signal

        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "unknown signal"
            return f"crashed with signal {self.signal} ({name})"
        return f"exited with status {self.exit_status}"


def run_process(argv, feed, payload, timeout_s, memory_mb, limits, mode):
    """Start `argv` with `feed` on stdin, `payload` on fd 3 and a verdict pipe on fd 4; wait
    for it to exit (an "assert" test: to close the verdict pipe) or time out; then kill every
    process it left and collect its output. Only an "io" test's stdout is kept whole (up to
    the cap); otherwise stdout, like stderr, keeps its tail."""
    import select
    import signal

    outcome = Outcome()
    pipes = {name: os.pipe() for name in ("stdin", "stdout", "stderr", "payload", "report")}
    pid = os.fork()
    if pid == 0:
        _exec_test_process(argv, pipes, timeout_s, memory_mb)
    for name, (r, w) in pipes.items():
        os.close(r if name in ("stdin", "payload") else w)
    started = time.monotonic()
    deadline = started + timeout_s
    to_write = {pipes["stdin"][1]: memoryview(feed)}
    if payload is not None:
        to_write[pipes["payload"][1]] = memoryview(payload)
    for fd in list(to_write):
        if not to_write[fd]:
            os.close(fd)
            del to_write[fd]
        else:
            os.set_blocking(fd, False)
    readers = {
        pipes["stdout"][0]: outcome.stdout,
        pipes["stderr"][0]: outcome.stderr,
        pipes["report"][0]: outcome.report,
    }
    report_fd, stdout_fd = pipes["report"][0], pipes["stdout"][0]
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    status = None
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status = wait_status
            break
        if mode == "assert" and report_fd not in readers and outcome.report:
            break  # the verdict is in: the test is over
        now = time.monotonic()
        if now >= deadline:
            outcome.timed_out = True
            break
        watched = list(readers) + ([pidfd] if pidfd is not None else [])
        wait_s = deadline - now if pidfd is not None else min(deadline - now, 0.01)
        ready_r, ready_w, _ = select.select(watched, list(to_write), [], wait_s)
        for fd in ready_w:
            try:
                sent = os.write(fd, to_write[fd][:65536])
                to_write[fd] = to_write[fd][sent:]
            except OSError:  # the test closed its end without reading everything
                to_write[fd] = to_write[fd][:0]
            if not to_write[fd]:
                os.close(fd)
                del to_write[fd]
        for fd in ready_r:
            if fd == pidfd:
                continue
            if _read_into(fd, readers[fd], outcome, limits, mode == "io" and fd == stdout_fd):
                del readers[fd]
                os.close(fd)
        if outcome.output_overflow:
            break
    if pidfd is not None:
        os.close(pidfd)
    _kill_leftovers(pid)
    if status is None:
        os.waitpid(pid, 0)  # killed by us: its status says nothing about the test
    _reap_orphans()
    _drain(readers, outcome, limits, stdout_fd if mode == "io" else None)
    for fd in to_write:
        os.close(fd)
    if status is not None:
        if os.WIFSIGNALED(status):
            outcome.signal = os.WTERMSIG(status)
            if outcome.signal == signal.SIGXCPU or (
                outcome.signal == signal.SIGKILL and time.monotonic() - started >= timeout_s
            ):
                outcome.timed_out = True  # the CPU-time limit (soft, then hard)
        else:
            outcome.exit_status = os.WEXITSTATUS(status)
    return outcome


def _read_into(fd, buffer, outcome, limits, judged):
    """Read one chunk; True at end of file. Judged output past the cap is an overflow; other
    output keeps only its tail."""
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        return True
    if not chunk:
        return True
    buffer += chunk
    if judged and len(buffer) > limits["max_output_bytes"]:
        del buffer[limits["max_output_bytes"] :]
        outcome.output_overflow = True
    elif not judged and len(buffer) > 2 * TAIL_KEEP:
        del buffer[:-TAIL_KEEP]
    return False


def _drain(readers, outcome, limits, judged_fd):
    """What is left in the pipes once every writer is gone (or after a short grace)."""
    import select

    deadline = time.monotonic() + 0.5
    while readers and time.monotonic() < deadline:
        ready, _, _ = select.select(list(readers), [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            if _read_into(fd, readers[fd], outcome, limits, fd == judged_fd):
                del readers[fd]
                os.close(fd)
    for fd in readers:
        os.close(fd)
    readers.clear()


def _kill_leftovers(pid):
    """The test's process, its group, and, in a PID namespace of our own, every process but
    us and the run's init (kill(-1) there reaches nothing outside the run)."""
    import signal

    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)
    if os.getpid() == 2 and os.getppid() == 1:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)


def _reap_orphans():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            return


def _exec_test_process(argv, pipes, timeout_s, memory_mb):
    """In the forked child: a session of its own, fds 0-4 set, limits lowered, then exec."""
    try:
        import fcntl
        import resource
        import signal

        os.setsid()
        order = ("stdin", "stdout", "stderr", "payload", "report")
        ends = [pipes[name][0 if name in ("stdin", "payload") else 1] for name in order]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in ends]  # out of the way of 0-4
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(5, 1 << 16)
        for name in (*CATCHABLE_SIGNALS, "SIGXFSZ"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        cpu = int(timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if memory_mb is not None:
            memory = memory_mb << 20
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                memory = min(memory, hard)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        os.execvp(argv[0], argv)
    except BaseException as exc:
        try:
            os.write(2, (f"test driver: cannot start the test: {exc!r}\n").encode())
        finally:
            os._exit(127)


# -- the test process (a fresh interpreter) --------------------------------------------------


def child():
    """Run one test. Reads instructions from fd 3; for an assert test, writes the verdict to
    fd 4 once the test code has run; for a stdin/stdout test, runs the solution as __main__."""
    import builtins
    import linecache

    chunks = []
    while True:
        chunk = os.read(3, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    instructions = json.loads(b"".join(chunks).decode("utf-8"))
    sources = {
        "prelude.py": instructions["prelude"],
        "solution.py": instructions["solution"],
        "test.py": instructions["test"],
    }
    for filename, text in sources.items():  # so tracebacks show the lines
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    import site

    sys.path.extend(p for p in site.getsitepackages() if p not in sys.path)
    if instructions["kind"] == "io":
        os.close(4)
        run_as_main(sources)
        return
    write, exit_now, dumps = os.write, os._exit, json.dumps  # kept from the solution's reach
    token = instructions.pop("token")
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        for filename in ("prelude.py", "solution.py", "test.py"):
            if sources[filename]:
                exec(compile(sources[filename], filename, "exec"), namespace)
    except BaseException as exc:  # whatever the solution raised is its failure
        verdict = {"ok": False, "reason": _describe_failure(exc), "token": token}
    else:
        verdict = {"ok": True, "token": token}
    write(4, dumps(verdict).encode("utf-8"))
    exit_now(0)


def run_as_main(sources):
    """The solution as the interpreter would run `python solution.py` (prelude first)."""
    main = type(sys)("__main__")
    main.__file__ = "solution.py"
    sys.modules["__main__"] = main
    sys.argv = ["solution.py"]
    for filename in ("prelude.py", "solution.py"):
        if sources[filename]:
            exec(compile(sources[filename], filename, "exec"), main.__dict__)


def _describe_failure(exc):
    """`Type: message`, with where it happened: the failing line of the test or the solution."""
    try:
        import traceback

        if isinstance(exc, SystemExit):
            text = f"SystemExit({exc.code!r}): the solution exited before the test finished"
        else:
            message = str(exc)
            text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        where = None
        if isinstance(exc, SyntaxError) and exc.filename in ("solution.py", "test.py", "prelude.py"):
            where = (exc.filename, exc.lineno, (exc.text or "").strip())
            text = f"SyntaxError: {exc.msg}"
        else:
            frames = traceback.extract_tb(exc.__traceback__)
            in_test = [f for f in frames if f.filename == "test.py"]
            in_solution = [f for f in frames if f.filename == "solution.py"]
            if in_solution and not isinstance(exc, AssertionError):
                frame = in_solution[-1]
            elif in_test:
                frame = in_test[-1]
            else:
                frame = (in_solution or frames or [None])[-1]
            if frame is not None and frame.filename in ("solution.py", "test.py", "prelude.py"):
                where = (frame.filename, frame.lineno, (frame.line or "").strip())
        if where is not None:
            filename, lineno, line = where
            text += f" ({filename[:-3]} line {lineno}{': ' + line if line else ''})"
        return _shorten(text)
    except BaseException:
        return type(exc).__name__


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        child()
    else:
        drive()

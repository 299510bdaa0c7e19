"""The test driver: the program that runs *inside* the sandbox to test one solution.

Standard library only, and it never imports rewardgym: the harness ships this file's source
into the sandbox as the program to run (see `rewards.code_tests`). Importing it runs
nothing, so its pieces (`normalize_output`) can be tested on the host.

The driver reads `tests.json` (and deletes it), then runs each test in a process of its own.
A Python test runs in a fresh fork of the *zygote*: one fresh interpreter per solution
(`python -I -S -c` running the zygote's part of this file, which the harness ships
precompiled where the Pythons match; not a fork of the driver, whose memory holds the
expected outputs and what the sandbox's own interpreter received), started by the driver,
that imports what the tests need once and then forks one process per test on request. The
zygote never holds anything secret (no expected outputs, no test code, no verdict tokens):
the driver hands each test process its own instructions on a pipe of its own, so a test sees
no other test and none of the driver's memory, and nothing a test does in its process
outlives it (all tests of one solution share the zygote's hash seed). Compiled programs
(C/C++ stdin/stdout tests) are exec'd by the driver. The driver itself never runs the
solution. It feeds the test its instructions on one pipe and reads the verdict from another;
the test's stdout and stderr go to pipes of their own. It enforces the per-test timeout, then
kills everything the test left behind (if a test's leftovers escaped its session, the zygote
goes with them and a new one serves the next test), and writes one JSON line per event on its
own stdout, which no test process can reach (their fds are closed, and the driver and the
zygote are not dumpable, so their /proc entries are closed to tests).

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

# Only builtin modules up here: the zygote's interpreter starts with this part of the file,
# and every import (json alone pulls in re and enum) would cost every solution.
import marshal
import os
import sys
import time

SPEC_FILE = "tests.json"
REASON_CHARS = 400
SHOW_CHARS = 80
TAIL_KEEP = 4096
CATCHABLE_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE")
# The zygote ignores these too, so no test can stop it but with SIGSTOP (undone after each test).
STOP_SIGNALS = ("SIGTSTP", "SIGTTIN", "SIGTTOU")
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
FDS = ("stdin", "stdout", "stderr", "payload", "report")  # a test process's fds 0-4
SOURCES = ("prelude.py", "solution.py", "test.py")
# Standard modules whose import does something (prints, opens a browser, wants a display):
# never imported ahead of the test.
NO_PRELOAD = frozenset(("antigravity", "this", "idlelib", "turtle", "turtledemo", "tkinter", "webbrowser"))
# Where the driver's part of this file begins: the zygote is started with the source before it.
DRIVER_SECTION = "\n# -- the driver:"
# The zygote's program where the harness compiled it for this Python: its code comes on fd 4.
ZYGOTE_BOOT = (
    "import marshal, os\n"
    "_zygote_code = b''.join(iter(lambda: os.read(4, 1 << 16), b''))\n"
    "os.close(4)\n"
    "exec(marshal.loads(_zygote_code))\n"
)


def _shorten(text, limit=REASON_CHARS):
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the zygote (a fresh interpreter) and the test processes it forks --------------------------


def zygote_main(modules):
    """Import what the tests need, then fork one test process per request from the driver
    (fd 3: a message with the test's timeout and memory limit, carrying its five fds) and
    answer with its pid. Holds nothing of any test; runs nothing of the solution."""
    import _signal  # not `signal`, `socket`: their imports cost more than the rest of our start
    import _socket
    import array
    import ctypes
    import site

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no test may ptrace us or open our /proc entries
    handlers = {name: _signal.getsignal(getattr(_signal, name)) for name in CATCHABLE_SIGNALS + STOP_SIGNALS}
    for name in handlers:
        _signal.signal(getattr(_signal, name), _signal.SIG_IGN)
    sys.path.extend(p for p in site.getsitepackages() if p not in sys.path)
    for name in filter(None, modules.split(",")):
        try:
            __import__(name)
        except BaseException:  # one that cannot be imported here fails in the test, as it would
            continue
    import gc

    gc.freeze()  # what we hold now is never collected: a test's collections leave its pages shared
    sock = _socket.socket(fileno=3)
    while True:
        fds = array.array("i")
        try:
            request, ancillary, _flags, _address = sock.recvmsg(
                256, _socket.CMSG_SPACE(len(FDS) * fds.itemsize)
            )
        except OSError:
            return
        if not request:
            return  # the driver is gone
        for level, kind, data in ancillary:
            if (level, kind) == (_socket.SOL_SOCKET, _socket.SCM_RIGHTS):
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        try:
            timeout_s, memory_mb = (float(word) for word in request.split())
            if len(fds) != len(FDS):
                raise ValueError(f"{len(fds)} fds")
            reply = str(_fork_test(list(fds), timeout_s, int(memory_mb), handlers, libc)).encode()
        except Exception as exc:
            reply = f"the zygote could not fork the test: {exc!r}"[:200].encode()
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(reply)
        except OSError:
            return


def _fork_test(fds, timeout_s, memory_mb, handlers, libc):
    """Fork a go-between that forks the test process and exits at once, so the test becomes
    the driver's child (the driver is the subreaper above us). Returns the test's pid."""
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                try:
                    _enter_test_process(fds, timeout_s, memory_mb, handlers)
                    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as a freshly exec'd process is
                    child()
                except BaseException as exc:
                    _die(f"test driver: cannot start the test: {exc!r}")
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read()
    os.waitpid(middle, 0)
    return int(answer)


def _enter_test_process(fds, timeout_s, memory_mb, handlers):
    """In a test process: a session of its own, `fds` as fds 0-4 and no other, the signal
    handlers of a fresh interpreter, and the per-test limits."""
    import _signal
    import fcntl
    import resource

    os.setsid()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]  # out of the way of 0-4
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(5, 1 << 16)
    for name, handler in handlers.items():
        _signal.signal(getattr(_signal, name), handler)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    cpu = int(timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if memory_mb is not None:
        memory = memory_mb << 20
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            memory = min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def _die(message):
    try:
        os.write(2, (message + "\n").encode())
    finally:
        os._exit(127)


def child():
    """Run one test; never returns. Reads its instructions (marshal: they come from the
    driver) from fd 3; for an assert test, writes the verdict to fd 4 once the test code has
    run ("<token> ok", or "<token> fail <reason>"); for a stdin/stdout test, runs the solution
    as __main__ and exits as the interpreter would."""
    import builtins

    chunks = []
    while True:
        chunk = os.read(3, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    instructions = marshal.loads(b"".join(chunks))
    sources = {name: instructions[name] for name in SOURCES}
    linecache = sys.modules.get("linecache")  # imported if the code imports traceback or logging
    if linecache is not None:
        for filename, text in sources.items():  # so the solution's own tracebacks show the lines
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    if instructions["kind"] == "io":
        os.close(4)
        os._exit(run_as_main(sources))
    write, exit_now = os.write, os._exit  # kept from the solution's reach
    token = instructions.pop("token")
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        for filename in SOURCES:
            if sources[filename]:
                exec(compile(sources[filename], filename, "exec"), namespace)
    except BaseException as exc:  # whatever the solution raised is its failure
        verdict = f"{token} fail {_describe_failure(exc, sources)}"
    else:
        verdict = f"{token} ok"
    write(4, verdict.encode("utf-8", "replace"))
    exit_now(0)


def run_as_main(sources):
    """The solution as `python solution.py` would run it (prelude first); the exit status
    the interpreter would give."""
    import atexit

    main = type(sys)("__main__")
    main.__file__ = "solution.py"
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["solution.py"]
    status = 0
    try:
        for filename in SOURCES[:2]:
            if sources[filename]:
                exec(compile(sources[filename], filename, "exec"), main.__dict__)
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:  # the interpreter's own way: the traceback, then status 1
        _print_traceback(exc, sources)
        status = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()  # wait for non-daemon threads, as the interpreter would
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 120  # what python exits with when it cannot flush its output
    return status


def _print_traceback(exc, sources):
    try:
        import linecache
        import traceback

        for filename, text in sources.items():
            linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # from the solution's frame
    except BaseException:
        os.write(2, f"{type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))


def _exit_status(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    try:  # noqa: SIM105 - no contextlib in the zygote
        print(exc.code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _describe_failure(exc, sources):
    """`Type: message`, with where it happened: the failing line of the test or the solution."""
    try:
        if isinstance(exc, SystemExit):
            text = f"SystemExit({exc.code!r}): the solution exited before the test finished"
        else:
            message = str(exc)
            text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        where = None
        if isinstance(exc, SyntaxError) and exc.filename in sources:
            where = (exc.filename, exc.lineno, (exc.text or "").strip())
            text = f"SyntaxError: {exc.msg}"
        else:
            frames, tb = [], exc.__traceback__
            while tb is not None:
                frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
                tb = tb.tb_next
            in_test = [f for f in frames if f[0] == "test.py"]
            in_solution = [f for f in frames if f[0] == "solution.py"]
            if in_solution and not isinstance(exc, AssertionError):
                frame = in_solution[-1]
            elif in_test:
                frame = in_test[-1]
            else:
                frame = (in_solution or frames or [None])[-1]
            if frame is not None and frame[0] in sources:
                where = (frame[0], frame[1], _source_line(sources[frame[0]], frame[1]))
        if where is not None:
            filename, lineno, line = where
            text += f" ({filename[:-3]} line {lineno}{': ' + line if line else ''})"
        return _shorten(text)
    except BaseException:
        return type(exc).__name__


def _source_line(text, lineno):
    lines = text.splitlines()
    return lines[lineno - 1].strip() if lineno and 0 < lineno <= len(lines) else ""


# -- the driver: the zygote's interpreter compiles none of what follows -------------------------

import contextlib  # noqa: E402 - the zygote's part above needs neither
import json  # noqa: E402


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
    own_source = globals().get("DRIVER_SOURCE")  # given by the harness's loader
    if own_source is None:
        with open(os.path.abspath(__file__), encoding="utf-8") as f:
            own_source = f.read()  # read now: a test could rewrite the file later
    emit({"event": "start", "python": sys.version.split()[0]})
    limits = spec["limits"]
    run_argv = spec.get("run")
    zygote = None
    if any(test["kind"] == "assert" or not run_argv for test in spec["tests"]):
        modules = ",".join(modules_to_preload(spec))
        code = globals().get("ZYGOTE_CODE")  # compiled by the harness for this Python, or None
        program = ZYGOTE_BOOT if code is not None else zygote_source(own_source)
        zygote = Zygote([sys.executable, "-I", "-S", "-B", "-c", program, modules], code)
    try:
        if spec.get("compile"):
            ok, reason = compile_solution(spec["compile"], limits)
            emit({"event": "compiled", "ok": ok, "reason": reason})
            if not ok:
                return
        for index, test in enumerate(spec["tests"]):
            emit({"event": "begin", "index": index})
            started = time.monotonic()
            try:
                if test["kind"] == "io" and run_argv:
                    passed, reason = run_io_program(run_argv, test, limits)
                else:
                    passed, reason = run_in_zygote(zygote, spec, test, limits)
            except OSError as exc:  # no process or pipe to be had: what earlier tests left holds them
                passed, reason = False, _shorten(f"the test could not be started: {exc}")
            elapsed = round(time.monotonic() - started, 4)
            emit({"event": "result", "index": index, "passed": passed, "reason": reason, "time_s": elapsed})
    finally:
        if zygote is not None:
            zygote.close()
    emit({"event": "done"})


def emit(event):
    data = (json.dumps(event) + "\n").encode("utf-8")
    while data:
        data = data[os.write(1, data) :]


def modules_to_preload(spec):
    """The standard modules the solution and its tests import (read off their import lines):
    the zygote imports them once for every test."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    names = []
    sources = [spec.get("prelude", ""), spec["solution"], *(t.get("code", "") for t in spec["tests"])]
    for source in sources:
        for line in source.splitlines():
            words = line.replace(",", " ").replace(";", " ").split()
            if len(words) < 2 or words[0] not in ("import", "from"):
                continue
            for i, word in enumerate(words[1:] if words[0] == "import" else words[1:2], start=1):
                name = word.split(".")[0]
                if words[i - 1] == "as" or not name.isidentifier() or name.startswith("_"):
                    continue
                if name in stdlib and name not in NO_PRELOAD and name not in names:
                    names.append(name)
    return names


def compile_solution(argv, limits):
    timeout_s = limits["compile_timeout_s"]
    outcome = run_process(_exec_starter(argv, timeout_s, None), b"", None, timeout_s, limits, "compile")
    if outcome.timed_out:
        return False, f"compilation failed: the compiler took longer than {limits['compile_timeout_s']:g}s"
    if outcome.exit_status != 0:
        errors = [line for line in outcome.stderr_text().splitlines() if "error" in line]
        detail = errors[0] if errors else outcome.stderr_text().strip()[-300:] or outcome.ending()
        return False, _shorten("compilation failed: " + detail)
    return True, ""


def run_in_zygote(zygote, spec, test, limits):
    """A Python test in a fresh fork of the zygote: an assert test, or the solution fed stdin."""
    token = os.urandom(12).hex()
    instructions = {
        "kind": test["kind"],
        "prelude.py": spec.get("prelude", ""),
        "solution.py": spec["solution"],
        "test.py": test.get("code", ""),
        "token": token,
    }
    feed = test.get("input", "").encode("utf-8")
    payload = marshal.dumps(instructions)  # to the test, never from it

    def start(fds):
        return zygote.spawn(fds, limits["timeout_s"], limits["memory_mb"])

    outcome = run_process(start, feed, payload, limits["timeout_s"], limits, test["kind"], zygote)
    if test["kind"] == "io":
        return judge_output(outcome, test, limits)
    verdict = outcome.verdict(token)
    if verdict is not None:
        return verdict
    if outcome.timed_out:
        return False, f"timeout: no result within {limits['timeout_s']:g}s"
    if outcome.report:
        return False, "the test process sent a verdict that is not the driver's (a forged verdict?)"
    return False, _shorten(f"the process {outcome.ending()} before the test finished{outcome.stderr_tail()}")


def run_io_program(argv, test, limits):
    """A compiled program fed the test's stdin."""
    feed = test.get("input", "").encode("utf-8")
    start = _exec_starter(argv, limits["timeout_s"], limits["memory_mb"])
    outcome = run_process(start, feed, None, limits["timeout_s"], limits, "io")
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

    def verdict(self, token):
        """(passed, reason) from a report that carries this test's token, else None."""
        words = self.report.decode("utf-8", "replace").split(" ", 2)
        if words[0] != token or words[1:2] not in (["ok"], ["fail"]):
            return None
        if words[1] == "ok":
            return (True, "") if len(words) == 2 else None
        return False, _shorten(words[2] if len(words) == 3 and words[2] else "the test failed")

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


def run_process(start, feed, payload, timeout_s, limits, mode, zygote=None):
    """Start a test process with `start(fds)` (its ends of the pipes: `feed` on stdin,
    `payload` on fd 3, a verdict pipe on fd 4; it returns the pid of a child of ours); wait for
    it to exit (an "assert" test: to close the verdict pipe) or time out; then kill every
    process it left and collect its output. Only an "io" test's stdout is kept whole (up to
    the cap); otherwise stdout, like stderr, keeps its tail."""
    import select
    import signal

    outcome = Outcome()
    pipes = {name: os.pipe() for name in FDS}
    theirs = [pipes[name][0 if name in ("stdin", "payload") else 1] for name in FDS]
    try:
        pid = start(theirs)
    except BaseException:
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
        raise
    for fd in theirs:
        os.close(fd)
    started = time.monotonic()
    deadline = started + timeout_s
    to_write = {pipes["stdin"][1]: memoryview(feed)}
    if payload is not None:
        to_write[pipes["payload"][1]] = memoryview(payload)
    else:
        os.close(pipes["payload"][1])
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
    _kill_test(pid)
    if status is None:
        os.waitpid(pid, 0)  # killed by us: its status says nothing about the test
    _sweep(zygote)
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


def _kill_test(pid):
    """The test's process and its process group (the session it started)."""
    import signal

    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(OSError):
            kill(target, signal.SIGKILL)


def _sweep(zygote):
    """After a test: reap its orphans and, in a PID namespace of our own (the sandbox's: we are
    PID 2 under the run's init), kill whatever else it left running. If anything is left
    but us, the init and the zygote, kill(-1) takes it all (the zygote too: the next test
    gets a new one)."""
    import signal

    _reap_orphans()
    if not (os.getpid() == 2 and os.getppid() == 1):
        return
    keep = {1, 2}
    if zygote is not None and zygote.pid is not None:
        keep.add(zygote.pid)
    if _strays(keep) != []:
        for _ in range(100):  # until nothing is left to signal: a fork bomb cannot outrun it
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                break
            _reap_orphans()
        if zygote is not None:
            zygote.close()
    elif zygote is not None and zygote.pid is not None:
        with contextlib.suppress(OSError):
            os.kill(zygote.pid, signal.SIGCONT)  # a test may have stopped it


def _strays(keep):
    """Pids (in our PID namespace) of the live processes of this run outside `keep` that are
    not already dying of a SIGKILL; None where /proc cannot tell (then all must go)."""
    try:
        depth = len(_proc_status("self")["NSpid"].split())
        names = os.listdir("/proc")
    except (OSError, KeyError, ValueError):
        return None
    strays = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            status = _proc_status(name)
            nspid = status["NSpid"].split()
            pending = int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16)
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile
        if len(nspid) < depth or status.get("State", "Z")[:1] in "ZX" or pending & (1 << 8):
            continue  # outside our namespace, dead, or already sent SIGKILL (signal 9: bit 8)
        if int(nspid[depth - 1]) not in keep:
            strays.append(int(nspid[depth - 1]))
    return strays


def _proc_status(pid):
    with open(f"/proc/{pid}/status", "rb") as f:
        text = f.read().decode("ascii", "replace")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _reap_orphans():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            return


def _exec_starter(argv, timeout_s, memory_mb):
    """A `start` for `run_process` that forks and execs `argv` (a compiled program, the compiler)."""

    def start(fds):
        pid = os.fork()
        if pid == 0:
            try:
                import _signal

                defaults = {name: _signal.SIG_DFL for name in CATCHABLE_SIGNALS}
                _enter_test_process(fds, timeout_s, memory_mb, defaults)
                os.execvp(argv[0], argv)
            except BaseException as exc:
                _die(f"test driver: cannot start the test: {exc!r}")
        return pid

    return start


class Zygote:
    """The driver's handle on the zygote: started on first use, asked for one test process
    at a time, and started again if a test killed it (or stopped it answering)."""

    def __init__(self, argv, code=None):
        self.argv = argv
        self.code = code  # the zygote's marshalled code, for ZYGOTE_BOOT on fd 4
        self.pid = None
        self.sock = None

    def spawn(self, fds, timeout_s, memory_mb):
        """A test process with `fds` as its fds 0-4; its pid, a child of ours (the zygote's
        go-between exits, so it comes to us, the subreaper)."""
        import _socket
        import array
        import select

        problem = None
        for _attempt in range(2):  # a second, fresh zygote if the first is gone
            if self.pid is None:
                self._start()
            request = f"{timeout_s!r} {memory_mb!r}".encode()
            try:
                rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))]
                self.sock.sendmsg([request], rights)
                deadline = time.monotonic() + timeout_s + 5.0
                reply = b""
                if select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    reply = self.sock.recv(256)
                if reply.isdigit():
                    return int(reply)
                problem = reply.decode("utf-8", "replace") or "the zygote did not answer"
            except OSError as exc:
                problem = f"the zygote is gone ({exc})"
            self.close()
        raise OSError(problem)

    def _start(self):
        import _socket

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        devnull = os.open(os.devnull, os.O_RDWR)
        code_r, code_w = os.pipe() if self.code is not None else (None, None)
        pid = os.fork()
        if pid == 0:
            try:
                import signal

                # stdout is /dev/null: the driver's stdout is the event channel, never the zygote's
                _enter_zygote_fds(devnull, theirs.fileno(), code_r)
                for name in CATCHABLE_SIGNALS:
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
                os.execv(self.argv[0], self.argv)
            except BaseException as exc:
                _die(f"test driver: cannot start the zygote: {exc!r}")
        os.close(devnull)
        theirs.close()
        if code_w is not None:
            os.close(code_r)
            with contextlib.suppress(OSError):  # the zygote died at once: spawn finds out
                _write_all(code_w, self.code)
            os.close(code_w)
        self.pid, self.sock = pid, ours

    def close(self):
        import signal

        if self.pid is None:
            return
        self.sock.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pid = self.sock = None


def _enter_zygote_fds(devnull, sock, code):
    """fd 0 and 1 /dev/null, fd 2 the driver's stderr, fd 3 the socket to the driver, fd 4
    the zygote's code (if it comes that way)."""
    import fcntl

    os.setsid()
    high = fcntl.fcntl(sock, fcntl.F_DUPFD, 64)
    code_high = fcntl.fcntl(code, fcntl.F_DUPFD, 64) if code is not None else None
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(high, 3)
    if code_high is not None:
        os.dup2(code_high, 4)
    os.closerange(5 if code_high is not None else 4, 1 << 16)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def zygote_source(own_source):
    """The zygote's program: the part of this file before the driver's, and its entry."""
    return own_source[: own_source.index(DRIVER_SECTION)] + "\nzygote_main(sys.argv[1])\n"


if __name__ == "__main__":
    drive()

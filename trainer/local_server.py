"""A `rewardgym` server (serve, serve-model, ...) as a child process on a free loopback port.

Scripts and benchmarks that need a real endpoint for a while (a local judge for the RLAIF
comparison, the reward server under load) start it here: it runs in its own process group,
is asked to stop with SIGTERM (uvicorn finishes in-flight requests), is killed with its
workers if it does not, and on Linux also gets SIGTERM if the parent dies first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rewardgym_server(
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    timeout_s: float = 600.0,
    health_path: str = "/health",
) -> Iterator[str]:
    """`rewardgym ARGV --port P` until the block ends; yields `http://127.0.0.1:P`.

    Output goes to `log_path` (or a temporary file); its tail is in the error if the server
    exits or does not answer `health_path` within `timeout_s`."""
    port = free_port()
    command = [sys.executable, "-m", "rewardgym", *argv, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with _log_file(log_path) as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
        )
        try:
            _wait_healthy(proc, url + health_path, log, timeout_s)
            yield url
        finally:
            stop_server(proc)


@contextlib.contextmanager
def _log_file(path: Path | None) -> Iterator[IO[bytes]]:
    if path is None:
        with tempfile.TemporaryFile() as log:
            yield log
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w+b") as log:
        yield log


def _die_with_parent() -> None:
    """In the server, before exec: get SIGTERM (a graceful uvicorn shutdown) if the parent dies
    without stopping it (SIGKILL, a crash). Its own session keeps a terminal's Ctrl-C for us."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: IO[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{output}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer {url} within {timeout_s:g} s")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully, workers too), then SIGKILL to its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # uvicorn workers or pool processes left over
        os.killpg(proc.pid, signal.SIGKILL)

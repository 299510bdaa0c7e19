"""The supervisor's channel through `docker attach`: its stdin and stdout, over one socket.

Without a TTY, docker's attach stream is asymmetric. What the host writes reaches the
container's stdin byte for byte. What comes back is multiplexed: frames of an 8-byte
header (stream: 1 stdout, 2 stderr; three zero bytes; big-endian length) and that many
bytes. The supervisor writes length-prefixed JSON reports to its stdout, so reading one
means taking stdout's bytes out of the frames; stderr is kept (its tail) to explain a
supervisor that dies. Everything here is bounded: a deadline per exchange and a size cap
per report, since the bytes come from a container running untrusted code.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from typing import Any

from sandbox.supervisor import send_message
from sandbox.supervisor_link import supervisor_code_marshalled
from sandbox.types import SandboxError

FRAME_HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2
STDERR_KEPT = 64 << 10


class AttachChannel:
    """Messages to and from a supervisor whose stdin/stdout are docker's attach socket.

    `keep_alive` holds docker-py's wrapper of the socket: dropping it would close a TLS
    connection under us.
    """

    def __init__(self, sock: socket.socket, keep_alive: object = None) -> None:
        self.sock = sock
        self._keep_alive = keep_alive
        self._stdout = bytearray()
        self._stderr = bytearray()

    def send(self, message: dict[str, Any], deadline: float) -> None:
        """One message to the supervisor (marshal, as it reads from its host)."""
        self.sock.settimeout(_left(deadline))
        send_message(self.sock, message)

    def send_raw(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(_left(deadline))
        self.sock.sendall(data)

    def recv_line(self, deadline: float, max_bytes: int = 256) -> str | None:
        """One newline-ended line of stdout (the bootstrap's Python version), or None at the end."""
        while b"\n" not in self._stdout:
            if len(self._stdout) > max_bytes:
                raise SandboxError(f"the sandbox sent a line longer than {max_bytes} bytes")
            if not self._read_frame(deadline):
                return None
        line, _, rest = bytes(self._stdout).partition(b"\n")
        self._stdout[:] = rest
        return line.decode("utf-8", "replace")

    def recv(self, deadline: float, max_bytes: int) -> dict[str, Any] | None:
        """The supervisor's next report, or None when the stream ended first. Raises
        TimeoutError past `deadline` and SandboxError for a report that is too large or not
        JSON."""
        header = self._stdout_exact(4, deadline)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        if size > max_bytes:
            raise SandboxError(f"the sandbox sent a {size}-byte report; at most {max_bytes} were expected")
        body = self._stdout_exact(size, deadline)
        if body is None:
            return None
        try:
            report = json.loads(body)
        except ValueError:
            raise SandboxError("the sandbox sent a report that is not JSON") from None
        if not isinstance(report, dict):
            raise SandboxError("the sandbox sent a report that is not a JSON object")
        return report

    def stderr_text(self) -> str:
        return self._stderr.decode("utf-8", "replace").strip()[-2000:]

    def close(self) -> None:
        """End the stream both ways, then close. The shutdown matters: it wakes a thread still
        waiting on a report, and the engine, which holds a container's removal until the
        attach stream's stdin ends."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        close = getattr(self._keep_alive, "close", None)
        with contextlib.suppress(OSError):
            if close is not None:
                close()
            self.sock.close()

    def _stdout_exact(self, size: int, deadline: float) -> bytes | None:
        while len(self._stdout) < size:
            if not self._read_frame(deadline):
                return None
        data = bytes(self._stdout[:size])
        del self._stdout[:size]
        return data

    def _read_frame(self, deadline: float) -> bool:
        header = self._recv_exact(FRAME_HEADER.size, deadline)
        if header is None:
            return False
        stream, size = FRAME_HEADER.unpack(header)
        data = self._recv_exact(size, deadline)
        if data is None:
            return False
        if stream == STDOUT:
            self._stdout += data
        elif stream == STDERR:
            self._stderr = (self._stderr + data)[-STDERR_KEPT:]
        return True  # stream 0 (stdin echo) comes only with a TTY; nothing else is defined

    def _recv_exact(self, size: int, deadline: float) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            self.sock.settimeout(_left(deadline))
            chunk = self.sock.recv(min(size - len(data), 1 << 20))
            if not chunk:
                return None
            data += chunk
        return bytes(data)


def start_supervisor(channel: AttachChannel, config: dict[str, Any], deadline: float) -> dict[str, Any]:
    """The bootstrap's handshake (see `supervisor.BOOTSTRAP`): it names its Python version,
    gets the supervisor's code for that version, then the config; the supervisor says hello.
    Raises SandboxError (with the container's stderr) if any step fails."""
    try:
        version = channel.recv_line(deadline)
        if version is not None:
            code = supervisor_code_marshalled(version.strip())
            channel.send_raw(struct.pack(">I", len(code)) + code, deadline)
            channel.send(config, deadline)
            hello = channel.recv(deadline, 1 << 20)
        else:
            hello = None
        failure = "it exited before saying it was ready"
    except (OSError, SandboxError) as exc:  # TimeoutError is an OSError
        hello, failure = None, f"{type(exc).__name__}: {exc}"
    if not hello or not hello.get("ready"):
        raise SandboxError(f"the sandbox did not start ({failure}) {channel.stderr_text()}".strip())
    return hello


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the sandbox did not answer in time")
    return left


def frame(stream: int, data: bytes) -> bytes:
    """One frame of docker's multiplexed stream (what the engine sends; for tests and tools)."""
    return FRAME_HEADER.pack(stream, len(data)) + data

"""Choosing a backend by name, and the process-wide default sandbox behind `sandbox.run`."""

from __future__ import annotations

import atexit
import threading

from sandbox.base import Sandbox
from sandbox.types import RunRequest, RunResult, SandboxError

BACKENDS = ("bubblewrap", "docker", "unsafe-no-isolation")
_default: Sandbox | None = None
_default_lock = threading.Lock()


def make_sandbox(backend: str = "bubblewrap", **options: object) -> Sandbox:
    """A new sandbox. `options` go to the backend's config (see each backend's docs);
    unknown options raise TypeError there, not silently."""
    if backend == "bubblewrap":
        from sandbox.bubblewrap import BubblewrapConfig, BubblewrapSandbox

        return BubblewrapSandbox(BubblewrapConfig(**options))  # type: ignore[arg-type]
    if backend == "docker":
        from sandbox.docker_backend import DockerConfig, DockerSandbox

        return DockerSandbox(DockerConfig(**options))  # type: ignore[arg-type]
    if backend == "unsafe-no-isolation":
        from sandbox.unisolated import UnsafeNoIsolationSandbox

        return UnsafeNoIsolationSandbox(**options)  # type: ignore[arg-type]
    raise SandboxError(f"unknown sandbox backend {backend!r}; known: {', '.join(BACKENDS)}")


def default_sandbox() -> Sandbox:
    """The shared bubblewrap sandbox used by `sandbox.run`, created on first use and closed
    at exit. Components that run code take a `Sandbox` argument; this is only the default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = make_sandbox("bubblewrap")
            atexit.register(_default.close)
        return _default


async def run(request: RunRequest, sandbox: Sandbox | None = None) -> RunResult:
    """Run one request in `sandbox` (default: the shared bubblewrap sandbox)."""
    return await (sandbox or default_sandbox()).run(request)

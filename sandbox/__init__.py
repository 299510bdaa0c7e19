"""Isolated code execution: `await run(RunRequest(code=...)) -> RunResult`.

Backends: bubblewrap namespaces (default; warm pre-forked interpreters), docker, and an
explicitly named unsafe no-isolation mode. See `sandbox.types` for requests and results.
"""

from sandbox.base import Sandbox
from sandbox.factory import BACKENDS, default_sandbox, make_sandbox, run
from sandbox.types import Limits, RunRequest, RunResult, RunStatus, SandboxError

__all__ = [
    "BACKENDS",
    "Limits",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "Sandbox",
    "SandboxError",
    "default_sandbox",
    "make_sandbox",
    "run",
]

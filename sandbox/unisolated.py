"""The explicit opt-in to run code with NO isolation: same limits API, none of the walls.

For machines where neither bubblewrap nor docker is available and the code is trusted
(your own tests, say). The code can read your files and environment-free but otherwise
full process, use the network and leave files behind. rlimits (CPU, address space, file
size, open files) and the wall clock still apply; a fork bomb is not stopped. The name is
long on purpose: `backend="unsafe-no-isolation"`.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import warnings

from sandbox.base import SupervisorSandbox
from sandbox.supervisor_link import SupervisorProcess, base_env
from sandbox.types import RunRequest

logger = logging.getLogger(__name__)


class UnsafeNoIsolationSandbox(SupervisorSandbox):
    name = "unsafe-no-isolation"

    def __init__(self, *, warm: bool = True, pool_size: int = 2, python: str | None = None) -> None:
        message = (
            "UNSAFE: the unsafe-no-isolation sandbox runs code with no isolation (host files, network and "
            "processes are all reachable). Use it only for trusted code."
        )
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        self.python = python or sys.executable
        self._root = tempfile.mkdtemp(prefix="rewardgym-unsafe-")
        self.workdir = self._root
        super().__init__(warm=warm, pool_size=pool_size)
        self._probe()

    def _env(self) -> dict[str, str]:
        return base_env(None, workdir=self._root)

    def _start_supervisor(self, request: RunRequest | None) -> SupervisorProcess:
        config = {
            "mode": "unisolated",
            "one_shot": request is not None,
            "site_packages": True,
            "sys_path": [],
            "preload": [],
        }
        return SupervisorProcess([], self.python, config, env=self._env())

    def close(self) -> None:
        super().close()
        shutil.rmtree(self._root, ignore_errors=True)

"""Control groups for sandboxes: a pids limit (the only fork-bomb stop that holds for root,
whose RLIMIT_NPROC the kernel ignores) and a memory limit over all processes of a run.

Used where the host lets us create groups (cgroup v1 `pids` + `memory`, or a writable
cgroup v2 subtree); elsewhere the sandbox falls back to rlimits and an unprivileged uid.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


@dataclass(frozen=True)
class CgroupLayout:
    """Where our groups go: one parent directory per controller (v1), or one for both (v2)."""

    version: int
    pids_parent: Path
    memory_parent: Path


def _own_cgroup_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _writable_dir(parent: Path) -> bool:
    try:
        parent.mkdir(exist_ok=True)
        probe = parent / f"probe-{os.getpid()}-{next(_counter)}"
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def detect_layout() -> CgroupLayout | None:
    """The layout we can use on this host, or None."""
    try:
        own = _own_cgroup_paths()
    except OSError:
        return None
    if (CGROUP_ROOT / "pids" / "pids.max").exists() or (CGROUP_ROOT / "pids").is_dir():
        pids = CGROUP_ROOT / "pids" / own.get("pids", "/").lstrip("/") / "rewardgym"
        memory = CGROUP_ROOT / "memory" / own.get("memory", "/").lstrip("/") / "rewardgym"
        if _writable_dir(pids) and _writable_dir(memory):
            return CgroupLayout(1, pids, memory)
        return None
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        parent = CGROUP_ROOT / own.get("", "/").lstrip("/")
        enabled = (parent / "cgroup.subtree_control").read_text().split() if parent.exists() else []
        if {"pids", "memory"} <= set(enabled) and _writable_dir(parent / "rewardgym"):
            group = parent / "rewardgym"
            try:
                (group / "cgroup.subtree_control").write_text("+pids +memory")
            except OSError:
                return None
            return CgroupLayout(2, group, group)
    return None


class SandboxCgroup:
    """One group for one sandbox process tree. Create, `set_limits`, start the tree in it
    (write its pid to `procs_files`), then `oom_kills()` after each run and `destroy()`."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        name = f"sandbox-{os.getpid()}-{next(_counter)}"
        self.pids_dir = layout.pids_parent / name
        self.memory_dir = layout.memory_parent / name
        self.pids_dir.mkdir()
        if self.memory_dir != self.pids_dir:
            self.memory_dir.mkdir()

    @property
    def procs_files(self) -> list[Path]:
        dirs = dict.fromkeys([self.pids_dir, self.memory_dir])
        return [d / "cgroup.procs" for d in dirs]

    def set_limits(self, max_processes: int, memory_bytes: int) -> None:
        (self.pids_dir / "pids.max").write_text(str(max_processes))
        if self.layout.version == 1:
            # v1 wants memory <= memory+swap at every moment: raise in one order, lower in the other.
            limit = self.memory_dir / "memory.limit_in_bytes"
            memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
            files = [limit, memsw] if memsw.exists() else [limit]
            try:
                for path in files:
                    path.write_text(str(memory_bytes))
            except OSError:
                for path in reversed(files):
                    path.write_text(str(memory_bytes))
        else:
            (self.memory_dir / "memory.max").write_text(str(memory_bytes))
            swap = self.memory_dir / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed in this group so far."""
        name = "memory.oom_control" if self.layout.version == 1 else "memory.events"
        try:
            for line in (self.memory_dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
        return sorted(found)

    def destroy(self) -> None:
        """Kill anything still in the group, then remove it. Safe to call twice."""
        deadline = time.monotonic() + 5.0
        for directory in dict.fromkeys([self.pids_dir, self.memory_dir]):
            while directory.exists():
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)

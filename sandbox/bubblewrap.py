"""The default backend: Linux namespaces through bubblewrap (`bwrap`, Debian's `bubblewrap`).

The sandbox sees an empty root (tmpfs) with /usr, the Python install and the few /etc
files the dynamic loader needs bound read-only; no network namespace peers (not even the
host's loopback); its own PID, IPC and UTS namespaces; a cleared environment. Inside it,
the supervisor gives each run fresh namespaces and tmpfs dirs of its own (see
`supervisor.py`).

Process limits: the kernel ignores RLIMIT_NPROC for root, so as root the sandbox puts
each supervisor in a cgroup with `pids.max` (and a memory limit over the whole run);
where no cgroup can be created it runs bwrap as an unprivileged uid instead, where
RLIMIT_NPROC holds. Not root: RLIMIT_NPROC per user namespace holds anyway.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from sandbox.base import SupervisorSandbox
from sandbox.cgroups import SandboxCgroup, detect_layout
from sandbox.languages import get_language
from sandbox.supervisor_link import COMPILE_MEMORY_MB, PRIVATE_DIRS, WORKDIR, SupervisorProcess, base_env
from sandbox.types import RunRequest, RunResult, RunStatus, SandboxError

# Cheap modules most test programs import; a warm interpreter loads them once.
DEFAULT_PRELOAD = (
    "collections", "itertools", "functools", "math", "re", "typing", "heapq", "bisect",
    "string", "json", "random", "dataclasses", "traceback", "io",
)  # fmt: skip
# Inside the sandbox the supervisor is uid 1000, not root: a run's own user namespace may
# then map it without CAP_SETFCAP, which --cap-drop ALL has taken away.
SANDBOX_UID = 1000
UNPRIVILEGED_UID = 65534  # "nobody": used only when root has no cgroup to stop a fork bomb
# Processes of ours in a sandbox's cgroup, added to pids.max so the program gets exactly
# max_processes. Warm: bwrap (2), supervisor, runner, the run's init. Cold: bwrap, supervisor.
WARM_OVERHEAD_PROCESSES = 5
COLD_OVERHEAD_PROCESSES = 2
RUN_MEMORY_OVERHEAD_MB = 96  # the supervisor's own share of a cgroup memory limit
NAMESPACES_HINT = (
    "{bwrap} is installed but could not build the sandbox: it needs unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; in a container, a "
    "seccomp/AppArmor profile that allows them) or a setuid bwrap"
)
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap), or use the docker backend; "
    "to run code with no isolation at all, ask for it by name: backend='unsafe-no-isolation'"
)


@dataclass(frozen=True)
class BubblewrapConfig:
    """`python`: the interpreter inside (default: this Python's base install, bound read-only;
    site-packages visible, .pth hooks not run). `ro_binds`: extra host paths to show read-only.
    `use_cgroups`: None = wherever the host allows. `pool_size`: warm supervisors (default:
    one per CPU)."""

    python: str | None = None
    warm: bool = True
    pool_size: int | None = None
    ro_binds: tuple[str, ...] = ()
    use_cgroups: bool | None = None
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    bwrap: str = "bwrap"


def default_python() -> tuple[str, str]:
    """(interpreter, install prefix) of this Python's base install, not a venv's shim."""
    prefix = sys.base_prefix
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(prefix) / "bin" / version, Path(sys.executable).resolve()):
        if candidate.exists():
            return str(candidate), prefix
    raise SandboxError(f"cannot find the base interpreter under {prefix}")


class _CgroupedSupervisor(SupervisorProcess):
    cgroup: SandboxCgroup | None = None
    oom_kills_seen = 0
    strays: tuple[int, ...] = ()  # processes found in the cgroup after a clean exit

    def close(self, grace_s: float = 0.0) -> None:
        super().close(grace_s)
        if self.cgroup is not None:
            self.strays = tuple(self.cgroup.pids())
            self.cgroup.destroy()


class BubblewrapSandbox(SupervisorSandbox):
    name = "bubblewrap"

    def __init__(self, config: BubblewrapConfig | None = None) -> None:
        self.config = config = config or BubblewrapConfig()
        bwrap = shutil.which(config.bwrap)
        if bwrap is None:
            raise SandboxError(f"bubblewrap ({config.bwrap!r}) is not installed: {INSTALL_HINT}")
        self.bwrap = bwrap
        if config.python is None:
            self.python, prefix = default_python()
        else:
            self.python = shutil.which(config.python) or config.python
            prefix = str(Path(self.python).resolve().parent.parent)
        self.python_prefix = prefix
        self.cgroup_layout = detect_layout() if config.use_cgroups is not False else None
        if config.use_cgroups and self.cgroup_layout is None:
            raise SandboxError("use_cgroups=True, but no cgroup with pids and memory controllers is writable")
        self.memory_cgroup = self.cgroup_layout is not None
        self.run_as: int | None = None
        if os.geteuid() == 0 and self.cgroup_layout is None:
            self.run_as = UNPRIVILEGED_UID
        self._cold_strays: list[int] = []
        super().__init__(warm=config.warm, pool_size=config.pool_size or os.cpu_count() or 1)
        self._probe()  # a sandbox that cannot isolate refuses here, with bwrap's reason

    @property
    def isolation(self) -> str:
        """A one-line account of how process limits hold, for logs and the bench."""
        if self.cgroup_layout is not None:
            return f"namespaces + cgroup v{self.cgroup_layout.version} (pids, memory)"
        if self.run_as is not None:
            return f"namespaces + unprivileged uid {self.run_as} (RLIMIT_NPROC)"
        return "namespaces + RLIMIT_NPROC (non-root user)"

    def _env(self) -> dict[str, str]:
        return base_env(str(Path(self.python).parent))

    def _close_cold(self, process: SupervisorProcess) -> None:
        process.close(grace_s=2.0)
        assert isinstance(process, _CgroupedSupervisor)
        self._cold_strays.extend(process.strays)

    def leftover_processes(self) -> list[int]:
        """Host pids of processes that outlived their run: anything in an idle (warm)
        supervisor's cgroup or process tree beyond bwrap, its init and the supervisor, and
        anything a cold supervisor's cgroup still held after bwrap exited (those were then
        killed). Always empty; the attack tests hold the sandbox to that."""
        self.wait_for_cleanup()
        leftovers: set[int] = set(self._cold_strays)
        children = _parent_map()
        for process in self._pool.idle():
            root = process.process.pid
            tree = _descendants(root, children)
            if isinstance(process, _CgroupedSupervisor) and process.cgroup is not None:
                tree |= set(process.cgroup.pids())
            leftovers |= tree - {root, *_chain_below(root, children, depth=2)}
        return sorted(leftovers)

    def bwrap_argv(self, request: RunRequest | None = None) -> list[str]:
        """bwrap's command line. With a request (cold), the private dirs are sized tmpfs
        mounts made by bwrap for that run and the supervisor is PID 1; without (warm), the
        supervisor mounts fresh ones per run itself."""
        argv = [
            self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--clearenv", "--hostname", "sandbox",
            "--tmpfs", "/", "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for etc in ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime"):
            argv += ["--ro-bind-try", etc, etc]
        if not self.python_prefix.startswith("/usr/"):
            argv += ["--ro-bind", self.python_prefix, self.python_prefix]
        for path in self.config.ro_binds:
            argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
        if request is None:
            argv += ["--dir", WORKDIR, "--dir", "/tmp"]
        else:
            size = str(request.limits.disk_mb << 20)
            for private in PRIVATE_DIRS:
                argv += ["--size", size, "--perms", "1777", "--tmpfs", private]
            argv += ["--as-pid-1"]
        # Everything but the private tmpfs dirs is read-only: no run can leave a file behind.
        argv += ["--remount-ro", "/", "--chdir", WORKDIR]
        for key, value in self._env().items():
            argv += ["--setenv", key, value]
        return [*argv, "--"]

    def _start_supervisor(self, request: RunRequest | None) -> SupervisorProcess:
        cgroup = SandboxCgroup(self.cgroup_layout) if self.cgroup_layout is not None else None
        config = {
            "mode": "warm" if request is None else "cold",
            "one_shot": request is not None,
            "site_packages": True,
            "sys_path": [],
            "preload": list(self.config.preload) if request is None else [],
        }
        try:
            if cgroup is not None:
                if request is None:
                    cgroup.set_limits(64, 1 << 30)
                else:
                    self._set_cgroup_limits(cgroup, request, COLD_OVERHEAD_PROCESSES)
            process = _CgroupedSupervisor(
                self.bwrap_argv(request),
                self.python,
                config,
                cgroup_procs=[str(p) for p in cgroup.procs_files] if cgroup else (),
                user=self.run_as,
            )
        except SandboxError as exc:
            if cgroup is not None:
                cgroup.destroy()
            hint = f" ({NAMESPACES_HINT.format(bwrap=self.bwrap)}; {INSTALL_HINT})"
            if self.run_as is not None:
                hint = (
                    f" (running as uid {self.run_as} because no cgroup is writable here: the interpreter "
                    f"{self.python} must be readable by that user; pass python='/usr/bin/python3'){hint}"
                )
            raise SandboxError(f"{exc}{hint}") from None
        except OSError as exc:
            if cgroup is not None:
                cgroup.destroy()
            raise SandboxError(f"cannot start bubblewrap: {exc}") from exc
        process.cgroup = cgroup
        return process

    def _before_run(self, process: SupervisorProcess, request: RunRequest) -> None:
        assert isinstance(process, _CgroupedSupervisor)
        if process.cgroup is not None:
            overhead = WARM_OVERHEAD_PROCESSES if self.warm else COLD_OVERHEAD_PROCESSES
            self._set_cgroup_limits(process.cgroup, request, overhead)
            process.oom_kills_seen = process.cgroup.oom_kills()

    @staticmethod
    def _set_cgroup_limits(cgroup: SandboxCgroup, request: RunRequest, overhead_processes: int) -> None:
        limits = request.limits
        memory_mb = limits.memory_mb + 3 * limits.disk_mb + RUN_MEMORY_OVERHEAD_MB
        if request.command is None and get_language(request.language).compile_argv is not None:
            memory_mb = max(memory_mb, COMPILE_MEMORY_MB + 3 * limits.disk_mb)
        cgroup.set_limits(limits.max_processes + overhead_processes, memory_mb << 20)

    def _after_run(self, process: SupervisorProcess, request: RunRequest, result: RunResult) -> RunResult:
        assert isinstance(process, _CgroupedSupervisor)
        if process.cgroup is None or result.status not in (RunStatus.ERROR, RunStatus.SANDBOX_ERROR):
            return result
        if process.cgroup.oom_kills() > process.oom_kills_seen:
            message = f"killed by the memory limit ({request.limits.memory_mb} MiB plus the run's tmpfs)"
            return replace(result, status=RunStatus.MEMORY, message=message)
        return result


def _parent_map() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc/*/stat (no /proc/PID/task/*/children on every kernel)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        if child not in found:
            found.add(child)
            stack += children.get(child, [])
    return found


def _chain_below(pid: int, children: dict[int, list[int]], depth: int) -> list[int]:
    """The single-child chain under `pid` (bwrap -> bwrap's init -> supervisor)."""
    chain: list[int] = []
    for _ in range(depth):
        kids = children.get(pid, [])
        if len(kids) != 1:
            break
        pid = kids[0]
        chain.append(pid)
    return chain

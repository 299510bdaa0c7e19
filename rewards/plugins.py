"""Loading other people's code: entry-point plugins (shared by the reward and environment
registries) and user modules named on the command line."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType


def run_entry_points(group: str, label: str, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Load and call each entry point in `group` (except names in `skip`).

    Each entry point names a callable that registers things (or a module that does so on
    import). A broken plugin warns with its name and error and is skipped; the others load.
    Returns the names that loaded.
    """
    loaded = []
    for ep in entry_points(group=group):
        if ep.name in skip:
            continue
        try:
            hook = ep.load()
            if callable(hook):
                hook()
        except Exception as exc:
            warnings.warn(
                f"rewardgym {label} plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        loaded.append(ep.name)
    return loaded


def import_user_module(spec: str) -> ModuleType:
    """Import a module by dotted name or from a `.py` file path, once per process.

    This is how `rewardgym serve --import my_rewards.py` loads a file that registers the
    user's own rewards; importing it twice returns the first import.
    """
    if not spec.endswith(".py"):
        try:
            return importlib.import_module(spec)
        except ImportError as exc:
            raise ImportError(f"cannot import {spec!r}: {exc}") from exc
    path = Path(spec).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such Python file: {spec}")
    name = f"rewardgym_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {spec} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

"""Running third-party entry points (shared by the reward and environment registries)."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points


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

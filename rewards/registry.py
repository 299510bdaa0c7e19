"""Rewards by name, so configs, the CLI and the reward server can address them.

Built-in rewards register when `rewards` is imported; other packages add theirs through
the `rewardgym.rewards` entry-point group (each entry point is a callable that calls
`register_reward`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from rewards.base import GroupReward, Reward
from rewards.plugins import run_entry_points

RewardFactory = Callable[..., Reward | GroupReward]
PLUGIN_GROUP = "rewardgym.rewards"

_factories: dict[str, RewardFactory] = {}


class UnknownRewardError(LookupError):
    """No reward is registered under that name."""


def register_reward(name: str, factory: RewardFactory, *, overwrite: bool = False) -> None:
    """Make `make_reward(name, **params)` call `factory(**params)`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")
    if name in _factories and not overwrite and _factories[name] is not factory:
        raise ValueError(f"a reward named {name!r} is already registered; pass overwrite=True")
    _factories[name] = factory


def reward_names() -> list[str]:
    return sorted(_factories)


def _lookup(name: str) -> RewardFactory:
    if name not in _factories:
        close = difflib.get_close_matches(name, _factories, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownRewardError(
            f"unknown reward {name!r}.{hint} Registered rewards: {', '.join(reward_names())}"
        )
    return _factories[name]


def make_reward(name: str, **params: Any) -> Reward | GroupReward:
    """Build the reward registered under `name` with its own keyword parameters."""
    factory = _lookup(name)
    try:
        bound = inspect.signature(factory).bind(**params)
    except TypeError as exc:
        accepted = ", ".join(inspect.signature(factory).parameters) or "no parameters"
        raise ValueError(f"reward {name!r}: {exc}. It accepts: {accepted}") from None
    return factory(*bound.args, **bound.kwargs)


def describe_reward(name: str) -> dict[str, Any]:
    """Name, summary and parameters of a registered reward (for listings and schemas)."""
    factory = _lookup(name)
    doc = inspect.getdoc(factory) or ""
    params = {
        p.name: None if p.default is inspect.Parameter.empty else repr(p.default)
        for p in inspect.signature(factory).parameters.values()
    }
    return {"name": name, "summary": doc.split("\n\n")[0], "parameters": params}


def load_reward_plugins() -> list[str]:
    """Run every `rewardgym.rewards` entry point; a broken plugin warns and is skipped."""
    return run_entry_points(PLUGIN_GROUP, "reward")

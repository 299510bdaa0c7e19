"""The examples in examples/ run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import envs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_custom_env_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_env.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "Not quite. The letters are: r e w a r d | reward 0.0" in out.stdout
    assert "second try: reward 1.0 terminated True" in out.stdout


def test_example_suite_file_builds_every_member() -> None:
    suite = envs.get_suite(str(EXAMPLES / "suites" / "math_mix.toml"))
    assert suite.probabilities == {"rewardgym/Math-v0": 0.5, "arithmetic": 0.25, "equations": 0.25}
    made = suite.make_envs()
    assert len(made["rewardgym/Math-v0"].examples) == 8  # four few-shot exchanges
    assert made["equations"].reset(seed=0)[1]["task_id"].startswith("reasoning_gym/simple_equations/")


def test_custom_tool_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_tool.py")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert (
        "tool: Error: bad arguments for convert: target: Input should be 'mi', 'km', 'ft' or 'm'"
        in out.stdout
    )
    assert "tool: 42.1648 km" in out.stdout
    assert "reward 1.0 | tool calls 3, errors 1" in out.stdout


@pytest.mark.parametrize("config", [*sorted(p.name for p in EXAMPLES.glob("*.toml")), "dapo_math_suite.yaml"])
def test_example_training_configs_are_valid(config: str) -> None:
    pytest.importorskip("pydantic")
    from trainer.config import TrainConfig

    loaded = TrainConfig.load(EXAMPLES / config, [])
    if "reward_model" in loaded.rollout.env_kwargs:  # made by `rewardgym rlaif train-rm` first
        with pytest.raises(ValueError, match="preference model directory not found"):
            envs.make(loaded.rollout.env, **loaded.rollout.env_kwargs)
    elif loaded.rollout.env is not None:
        envs.make(loaded.rollout.env, **loaded.rollout.env_kwargs).close()  # the env accepts its settings
    else:
        assert loaded.rollout.suite is not None and envs.get_suite(loaded.rollout.suite)

"""Environment ids: gymnasium registry, our `make`, and third-party plugins."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import pytest

import envs
from envs import MathEnv, UnknownEnvError

from conftest import run_with_plugin


def test_gymnasium_make_works_for_our_ids() -> None:
    env = gymnasium.make("rewardgym/Math-v0")
    assert isinstance(env.unwrapped, MathEnv)
    obs, info = env.reset(seed=0)
    assert obs[-1]["role"] == "user" and info["task_id"].startswith("math_basic-")
    env.close()


def test_make_returns_the_unwrapped_env_with_overrides() -> None:
    env = envs.make("rewardgym/Math-v0", max_attempts=2, few_shot=1)
    assert type(env) is MathEnv and env.max_attempts == 2 and len(env.examples) == 2
    assert {"rewardgym/Math-v0", "rewardgym/MathMultiTurn-v0", "rewardgym/Arithmetic-v0"} <= set(
        envs.env_ids()
    )
    assert "Bundled math" in envs.env_description("rewardgym/Math-v0")


def test_unknown_ids_and_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(
        UnknownEnvError, match=r"unknown environment 'rewardgym/Mat-v0'\. Did you mean rewardgym/Math-v0"
    ):
        envs.make("rewardgym/Mat-v0")
    with pytest.raises(TypeError, match=r"cannot make 'rewardgym/Math-v0' with \['colour'\]"):
        envs.make("rewardgym/Math-v0", colour="blue")
    gymnasium.register("test/NotText-v0", "gymnasium.envs.classic_control:CartPoleEnv")
    try:
        with pytest.raises(TypeError, match="not a rewardgym text environment"):
            envs.make("test/NotText-v0")
    finally:
        del gymnasium.registry["test/NotText-v0"]


def test_a_separately_installed_package_adds_environments(tmp_path: Path) -> None:
    """A `rewardgym.envs` entry point in another package; a broken one only warns."""
    source = """
        from envs import MultiTurnEnv, Task, TaskList, register_env
        from rewards import FunctionReward

        class Echo(MultiTurnEnv):
            def __init__(self, render_mode=None):
                tasks = TaskList([Task(id="e1", prompt="say hi", answer="hi")])
                reward = FunctionReward(lambda s: s.completion == s.reference, name="echo")
                super().__init__(tasks, reward, render_mode=render_mode)

        def register():
            register_env("acme/Echo-v0", Echo, description="says hi back")

        def broken():
            raise ImportError("missing dependency")
        """
    script = """
        import warnings
        warnings.simplefilter("always")
        import gymnasium, envs
        print("acme/Echo-v0" in envs.env_ids(), "rewardgym/Math-v0" in envs.env_ids())
        env = gymnasium.make("acme/Echo-v0")
        env.reset(seed=0)
        print(env.step("hi")[1])
        print(envs.make("acme/Echo-v0").reset(seed=0)[1]["task_id"])
        """
    entries = {"acme": "acme_envs:register", "bad": "acme_envs:broken"}
    out = run_with_plugin(tmp_path, "acme_envs", source, "rewardgym.envs", entries, script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "1.0", "e1"]
    assert "environment plugin 'bad' (acme_envs:broken) failed to load: missing dependency" in out.stderr

"""Training configs: validated with errors that name the field, overridable from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardgym.cli import main
from trainer.config import TrainConfig, TrainConfigError, describe_fields, parse_override

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_configs_are_valid() -> None:
    configs = sorted(EXAMPLES.glob("*.toml")) + sorted(EXAMPLES.glob("*.yaml"))
    assert configs
    for path in configs:
        if "suites" not in path.parts:
            TrainConfig.load(path)


def test_overrides_are_typed_and_dotted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 3\nloss:\n  algorithm: dapo\n")
    config = TrainConfig.load(path, ["optim.lr=1e-5", "rollout.group_size=4", "lora.enabled=false"])
    assert (config.steps, config.loss.algorithm, config.optim.lr) == (3, "dapo", 1e-5)
    assert (config.rollout.group_size, config.lora.enabled) == (4, False)
    assert config.loss.settings().clip_high == 0.28  # DAPO's clip-higher default
    assert parse_override("rollout.env_kwargs={few_shot: 2}") == ("rollout.env_kwargs", {"few_shot": 2})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], r"optim\.lrr: Extra inputs are not permitted"),
        (["loss.algorithm=ppo"], r"loss\.algorithm: Input should be 'grpo', 'dr_grpo', 'dapo' or 'gspo'"),
        (["rollout.group_size=1"], r"rollout\.group_size: Input should be greater than or equal to 2"),
        (["steps=many"], r"steps: Input should be a valid integer"),
        (["rollout.suite=x", "rollout.env=y"], r"give exactly one of rollout\.env and rollout\.suite"),
        (["engine.kind=tpu"], r"engine\.kind: Input should be 'transformers', 'vllm' or 'openai'"),
        (["no_equals_sign"], r"an override is KEY=VALUE"),
        (["rollout.reward_url=ftp://host"], r"rollout\.reward_url: .*must look like http://host:port"),
        (["rollout.remote_reward=math"], r"rollout\.remote_reward .* go with rollout\.reward_url"),
        (
            ["rollout.suite=rewardgym/math", "rollout.reward_url=http://127.0.0.1:1"],
            r"rollout\.reward_url applies to rollout\.env",
        ),
        (
            ["rollout.reward_url=http://127.0.0.1:1", "rollout.env_kwargs={reward: x}"],
            r"rollout\.reward_url or rollout\.env_kwargs\.reward, not both",
        ),
    ],
)
def test_invalid_settings_name_the_field(overrides: list[str], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig.load(None, overrides)


def test_reward_urls_are_one_or_several_and_normalised() -> None:
    one = TrainConfig.load(None, ["rollout.reward_url=http://127.0.0.1:8000/"])
    assert one.rollout.reward_url == ("http://127.0.0.1:8000",)
    two = TrainConfig.load(None, ["rollout.reward_url=[http://a:1, https://b:2]", "rollout.remote_reward=m"])
    assert (two.rollout.reward_url, two.rollout.remote_reward) == (("http://a:1", "https://b:2"), "m")


def test_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("steps = [\n")
    with pytest.raises(TrainConfigError, match="cannot parse"):
        TrainConfig.load(path)


def test_every_field_is_documented() -> None:
    rows = describe_fields()
    assert len(rows) > 40
    assert all(description for _, _, description in rows), [key for key, _, d in rows if not d]


def test_cli_reports_config_and_model_errors_without_a_traceback(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--set", "optim.lr=-1"]) == 2
    assert "optim.lr: Input should be greater than 0" in capsys.readouterr().err
    code = main(["train", "--model", str(tmp_path / "no-such-model"), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "no-such-model" in capsys.readouterr().err
    # settings only the environment or the model can judge: one line naming the field, no traceback
    base = ["train", "--no-progress", "--model", str(tiny_model_dir), "--run-dir", str(tmp_path / "run")]
    for setting, message in (
        ("rollout.env=rewardgym/Nope-v0", "rollout.env: unknown environment 'rewardgym/Nope-v0'"),
        ("rollout.env_kwargs={bogus: 1}", "unexpected keyword argument 'bogus'"),
        ("lora.target_modules=[nope]", "none of lora.target_modules ['nope'] are layers of tiny-model"),
        ("rollout.reward_api_key_env=NO_SUCH_VARIABLE_7", "rollout.reward_api_key_env: "),
    ):
        extra = ["--set", "rollout.reward_url=http://127.0.0.1:1"] if "api_key" in setting else []
        assert main([*base, "--set", setting, *extra]) == 2, setting
        err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
        assert f"error: {message}" in err or "error: rollout.env_kwargs: " in err, err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # --reward-url is the shortcut for rollout.reward_url (which a suite does not take)
    assert main(["train", "--reward-url", "http://127.0.0.1:1", "--set", "rollout.suite=rewardgym/math"]) == 2
    assert "rollout.reward_url applies to rollout.env" in " ".join(capsys.readouterr().err.split())
    assert main(["train", "--help-config"]) == 0
    assert "loss.algorithm" in capsys.readouterr().out

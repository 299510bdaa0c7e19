"""Data-parallel training with torchrun: two CPU processes (gloo) give one process's result,
and their checkpoints resume exactly, with two ranks or with one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.config import TrainConfig
from trainer.grpo import train
from trainer.metrics_log import read_metrics

from conftest import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores
    return env


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        f"--master-port={free_port()}",
        *args,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddp", "fsdp2"])
def test_two_ranks_match_one_process(tiny_model_dir: Path, tmp_path: Path, kind: str) -> None:
    script = str(HERE / "ddp_step.py")
    single = subprocess.run(
        [sys.executable, script, str(tiny_model_dir), str(tmp_path / "one.st"), kind],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(
        _torchrun(script, str(tiny_model_dir), str(tmp_path / "two.st"), kind),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    assert one.keys() == two.keys() and one
    initial_differs = False
    for name in one:
        # Adam divides by sqrt(v): near-zero gradients summed in another order move by up to ~1% of
        # one step (lr 1e-2), so the tolerance is 1e-4 absolute.
        torch.testing.assert_close(two[name], one[name], rtol=1e-3, atol=1e-4)
        initial_differs |= "lora_B" in name and bool(one[name].abs().sum() > 0)
    assert initial_differs, "training changed nothing, so the comparison proves nothing"


def _settings(model_dir: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    """A small run on tests/LetterA-v0, as `--set` overrides (the CLI's and TrainConfig.load's)."""
    return [
        f"model.name={model_dir}",
        f"run_dir={run_dir}",
        f"steps={steps}",
        f"imports=[{HERE / 'train_envs.py'}]",
        "rollout.env=tests/LetterA-v0",
        "rollout.max_tokens=8",
        "rollout.group_size=4",
        "rollout.groups_per_step=2",
        "tensorboard=false",
        *extra,
    ]


def _train_under_torchrun(settings: list[str]) -> None:
    args = ["-m", "rewardgym", "train", "--no-progress"] + [a for s in settings for a in ("--set", s)]
    done = subprocess.run(_torchrun(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_rewardgym_train_runs_under_torchrun(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _train_under_torchrun(_settings(tiny_model_dir, run_dir, 2))
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 logs once per step...
    assert all(r["groups/trained"] == 2 for r in rows)  # ...counting both ranks' groups
    assert (run_dir / "checkpoints" / "step_000002" / "trainable.safetensors").is_file()


@pytest.mark.slow
def test_an_fsdp2_run_saves_a_checkpoint_that_resumes_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """FSDP2 with the transformers engine (each rank generates with an unsharded copy): saving
    gathers the shards into the single-process format, and a run resumed from the step-2
    checkpoint continues with the same numbers, under torchrun or in one process."""
    extra = ("distributed=fsdp2", "lora.enabled=false", "optim.lr=3e-3", "checkpoint_every=2")
    straight = tmp_path / "straight"
    _train_under_torchrun(_settings(tiny_model_dir, straight, 4, *extra))
    saved = load_file(straight / "checkpoints" / "step_000002" / "trainable.safetensors")
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert (
        saved["model.embed_tokens.weight"].shape == initial["model.embed_tokens.weight"].shape
    )  # not a shard
    optimizer = torch.load(straight / "checkpoints" / "step_000002" / "optimizer.pt", weights_only=False)
    assert {k: v["exp_avg"].shape for k, v in optimizer["optimizer"]["state"].items()} == {
        k: v.shape for k, v in saved.items()
    }  # both ranks' optimizer state, whole
    assert len(optimizer["rng"]) == 2  # each rank's own RNG state

    def killed_after_step_2(run_dir: Path) -> None:
        (run_dir / "checkpoints").mkdir(parents=True)
        shutil.copytree(straight / "checkpoints" / "step_000002", run_dir / "checkpoints" / "step_000002")
        (run_dir / "checkpoints" / "latest").write_text("step_000002")

    def numbers(run_dir: Path) -> list[float]:
        rows = read_metrics(run_dir / "metrics.jsonl")
        return [r[key] for r in rows if r["step"] > 2 for key in ("reward/mean", "grad_norm")]

    two_ranks, one_process = tmp_path / "two_ranks", tmp_path / "one_process"
    killed_after_step_2(two_ranks)
    _train_under_torchrun(_settings(tiny_model_dir, two_ranks, 4, *extra))
    killed_after_step_2(one_process)
    result = train(TrainConfig.load(None, _settings(tiny_model_dir, one_process, 4, *extra)), progress=False)
    assert result.resumed_from == 2

    expected = numbers(straight)
    assert len(expected) == 4 and all(expected)
    assert numbers(two_ranks) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert numbers(one_process) == pytest.approx(expected, rel=1e-3, abs=1e-6)  # sums in another order
    final = load_file(straight / "checkpoints" / "step_000004" / "trainable.safetensors")
    assert any(not torch.equal(final[k], saved[k]) for k in final)  # steps 3 and 4 changed the weights
    for run_dir, tolerance in ((two_ranks, 1e-6), (one_process, 1e-4)):
        resumed = load_file(run_dir / "checkpoints" / "step_000004" / "trainable.safetensors")
        assert resumed.keys() == final.keys()
        for name, tensor in final.items():
            torch.testing.assert_close(resumed[name], tensor, rtol=tolerance, atol=tolerance)

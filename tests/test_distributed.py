"""Data-parallel training with torchrun: two CPU processes (gloo) give one process's result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


@pytest.mark.slow
def test_rewardgym_train_runs_under_torchrun(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "-m",
        "rewardgym",
        "train",
        "--no-progress",
        "--steps",
        "2",
        "--run-dir",
        str(run_dir),
        "--model",
        str(tiny_model_dir),
        "--set",
        f"imports=[{HERE / 'train_envs.py'}]",
        "--set",
        "rollout.env=tests/LetterA-v0",
        "--set",
        "rollout.max_tokens=8",
        "--set",
        "rollout.group_size=4",
        "--set",
        "rollout.groups_per_step=2",
        "--set",
        "tensorboard=false",
    ]
    done = subprocess.run(_torchrun(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 logs once per step...
    assert all(r["groups/trained"] == 2 for r in rows)  # ...counting both ranks' groups
    assert (run_dir / "checkpoints" / "step_000002" / "trainable.safetensors").is_file()

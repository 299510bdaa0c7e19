"""Checkpoints of the real learner on a real tiny model: the learning-rate schedule a run was
made with survives a resume that asks for another number of steps."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from ddp_step import batch

from trainer.checkpoint import CheckpointError, Checkpoints
from trainer.config import LoraSection, LossSection, ModelSection, OptimSection
from trainer.learner import Learner
from trainer.policy import load_policy

OPTIM = OptimSection(lr=1e-2, micro_batch_size=4, schedule="cosine")


def _learner(model_dir: Path, total_steps: int) -> Learner:
    torch.manual_seed(0)
    policy = load_policy(
        ModelSection(name=str(model_dir)), LoraSection(enabled=True, rank=4), keep_reference=False
    )
    return Learner(
        policy, OPTIM, LossSection(algorithm="grpo"), max_tokens=8, temperature=1.0, total_steps=total_steps
    )


def _config(steps: int) -> dict[str, Any]:
    return {"steps": steps, "optim": OPTIM.model_dump(mode="json")}


def _train(learner: Learner, steps: int, *, nan: bool = False) -> list[float]:
    """The learning rates the steps ran with; `nan`: steps the learner skips (NaN advantages)."""
    sequences = [replace(s, advantage=math.nan) for s in batch()] if nan else batch()
    return [learner.train_step(sequences)["lr"] for _ in range(steps)]


def _assert_same_weights(learner: Learner, expected: Learner) -> None:
    wanted = expected.policy.trainable_parameters
    for name, p in learner.policy.trainable_parameters.items():
        torch.testing.assert_close(p, wanted[name], rtol=1e-6, atol=1e-7)


def test_a_resume_with_fewer_steps_keeps_the_cosine_schedule_and_more_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    straight = _learner(tiny_model_dir, total_steps=6)
    lrs = _train(straight, 4)

    first = _learner(tiny_model_dir, total_steps=6)
    assert _train(first, 2) == lrs[:2]
    checkpoints = Checkpoints(tmp_path / "run")
    path = checkpoints.save(2, first.policy, first, _config(6))

    # The same run resumed with steps=4: it stops earlier, but on the schedule it was made with.
    resumed = _learner(tiny_model_dir, total_steps=4)
    assert checkpoints.restore(path, resumed.policy, resumed, _config(4)).step == 2
    assert resumed.schedule_steps == 6
    assert _train(resumed, 2) == pytest.approx(lrs[2:], rel=1e-12)
    _assert_same_weights(resumed, straight)

    # More steps than the schedule has would train at learning rate 0: refused, saying so.
    longer = _learner(tiny_model_dir, total_steps=8)
    with pytest.raises(CheckpointError, match="cosine learning-rate schedule ends at step 6"):
        checkpoints.restore(path, longer.policy, longer, _config(8))


def test_a_checkpoint_after_only_skipped_steps_resumes_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """No optimizer state exists yet: the resumed run must not invent any (Adam's step count)
    and must go on at the learning rate the schedule has reached."""
    straight = _learner(tiny_model_dir, total_steps=6)
    _train(straight, 2, nan=True)
    lrs = _train(straight, 2)
    assert straight.skipped_steps == 2

    first = _learner(tiny_model_dir, total_steps=6)
    _train(first, 2, nan=True)
    checkpoints = Checkpoints(tmp_path / "run")
    path = checkpoints.save(2, first.policy, first, _config(6))
    resumed = _learner(tiny_model_dir, total_steps=6)
    checkpoints.restore(path, resumed.policy, resumed, _config(6))
    assert resumed.skipped_steps == 2 and not resumed.optimizer.state
    assert _train(resumed, 2) == pytest.approx(lrs, rel=1e-12)
    _assert_same_weights(resumed, straight)

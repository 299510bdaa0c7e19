"""Checkpoints that a killed run resumes from exactly, and that a crash can never corrupt.

A checkpoint is a directory `checkpoints/step_000010/` with the trainable weights
(`trainable.safetensors`, plus the model or LoRA adapter saved with `save_pretrained` for
users), the optimizer and scheduler states, RNG states, and `state.json` (step, config).
It is written under a temporary name, flushed, and renamed into place; the `latest` file
is replaced atomically last. A half-written checkpoint is therefore never `latest`, and
leftovers from a crash are removed on the next save.

The data position needs no state of its own: a step's tasks and sampling seeds are a pure
function of (seed, step), so resuming at step s replays exactly the batches s, s+1, ...
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainer.learner import Learner
from trainer.policy import Policy

STATE_FILE = "state.json"
ENGINE_FILE = "engine_trainable.safetensors"  # overlapped rollouts: the weights one step behind


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from (missing files, another configuration)."""


@dataclass(frozen=True)
class Resumed:
    step: int  # the number of optimizer steps already done
    path: Path
    engine_weights: dict[str, torch.Tensor] | None  # with overlapped rollouts: what generates the next step


class Checkpoints:
    def __init__(self, run_dir: Path, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def save(
        self,
        step: int,
        policy: Policy,
        learner: Learner,
        config: dict[str, Any],
        *,
        engine_weights: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f".step_{step:06d}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        trainable = {name: p.detach().cpu().contiguous() for name, p in policy.trainable_parameters.items()}
        save_file(trainable, tmp / "trainable.safetensors")
        if engine_weights is not None:
            save_file({k: v.contiguous() for k, v in engine_weights.items()}, tmp / ENGINE_FILE)
        policy.model.save_pretrained(tmp / "model", safe_serialization=True)
        policy.tokenizer.save_pretrained(tmp / "model")
        torch.save(
            {
                "optimizer": learner.optimizer.state_dict(),
                "scheduler": learner.scheduler.state_dict(),
                "skipped_steps": learner.skipped_steps,
                "rng": {
                    "python": random.getstate(),
                    "numpy": np.random.get_state(),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                },
            },
            tmp / "optimizer.pt",
        )
        state = {"step": step, "config": config}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write(self.root / "latest", final.name)
        self._prune()
        return final

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"{pointer} names {path.name}, which is incomplete or missing")
        return path

    def restore(self, path: Path, policy: Policy, learner: Learner, config: dict[str, Any]) -> Resumed:
        state = json.loads((path / STATE_FILE).read_text())
        _check_compatible(state.get("config", {}), config, path)
        weights = load_file(path / "trainable.safetensors", device=str(policy.device))
        params = policy.trainable_parameters
        missing = set(params) - set(weights)
        if missing:
            raise CheckpointError(
                f"{path}: no saved weights for {sorted(missing)[:3]} (another model or LoRA set-up?)"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        extra = torch.load(path / "optimizer.pt", weights_only=False)
        learner.optimizer.load_state_dict(extra["optimizer"])
        learner.scheduler.load_state_dict(extra["scheduler"])
        learner.skipped_steps = extra["skipped_steps"]
        rng = extra["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        engine_file = path / ENGINE_FILE
        engine_weights = load_file(engine_file, device=str(policy.device)) if engine_file.is_file() else None
        return Resumed(step=int(state["step"]), path=path, engine_weights=engine_weights)

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in self.root.glob(".step_*.partial"):
            shutil.rmtree(partial, ignore_errors=True)


# Settings that may change between a run and its resumption without changing its numbers.
_MAY_CHANGE = {"run_dir", "steps", "checkpoint_every", "keep_checkpoints", "samples_every", "tensorboard"}


def _check_compatible(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    changed = sorted(
        k for k in set(saved) | set(current) if k not in _MAY_CHANGE and saved.get(k) != current.get(k)
    )
    if changed:
        raise CheckpointError(
            f"{path} was written with different settings for {changed}; resuming would not continue the "
            "same run. Use a new run_dir, or restore those settings."
        )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())

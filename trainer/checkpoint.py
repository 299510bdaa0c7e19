"""Checkpoints that a killed run resumes from exactly, and that a crash can never corrupt.

A checkpoint is a directory `checkpoints/step_000010/` with the trainable weights
(`trainable.safetensors`, plus the model or LoRA adapter saved with `save_pretrained` for
users), the optimizer and scheduler states, each rank's RNG states, and `state.json` (step,
config, the learning-rate schedule's length). It is written under a temporary name, flushed,
and renamed into place; the `latest` file is replaced atomically last. A half-written
checkpoint is therefore never `latest`, and leftovers from a crash are removed on the next save.

Under `torchrun` saving and restoring are collective: every rank calls them together. The
weights and optimizer state go through `torch.distributed.checkpoint.state_dict` as full,
unsharded tensors keyed by parameter name, so DDP, FSDP2 and a single process write the same
files and any of them can resume from any other's checkpoint.

The data position needs no state of its own: a step's tasks and sampling seeds are a pure
function of (seed, step), so resuming at step s replays exactly the batches s, s+1, ...
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from trainer.learner import Learner
from trainer.policy import Policy

logger = logging.getLogger(__name__)

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
        """Write the checkpoint of `step`. Under torchrun every rank calls this together: the
        state is gathered from all ranks, rank 0 writes it, and all return once it is in place."""
        final = self.root / f"step_{step:06d}"
        model_state = get_model_state_dict(policy.model, options=_GATHER)  # rank 0 only under torchrun
        # With no state yet (every step so far skipped), DCP would take a zero step to make some.
        has_state = bool(learner.optimizer.state)
        optimizer_state = (
            get_optimizer_state_dict(policy.model, learner.optimizer, options=_GATHER) if has_state else {}
        )
        rng = _gather_objects(_rng_state())
        error: Exception | None = None
        if _rank() == 0:
            extra = {
                "optimizer": optimizer_state,
                "scheduler": learner.scheduler.state_dict(),
                "skipped_steps": learner.skipped_steps,
                "rng": rng,  # one entry per rank
            }
            state = {"step": step, "config": config, "schedule_steps": learner.schedule_steps}
            try:
                self._write(final, policy, model_state, extra, state, engine_weights)
            except Exception as exc:  # the other ranks must learn of it rather than wait forever
                error = exc
        if not _on_every_rank(error is None):
            if error is not None:
                raise error
            raise CheckpointError(f"rank 0 could not write {final} (its log has the error)")
        return final

    def _write(
        self,
        final: Path,
        policy: Policy,
        model_state: dict[str, Any],
        extra: dict[str, Any],
        state: dict[str, Any],
        engine_weights: dict[str, torch.Tensor] | None,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{final.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        trainable = {name: model_state[name].contiguous() for name in policy.trainable_parameters}
        save_file(trainable, tmp / "trainable.safetensors")
        if engine_weights is not None:
            save_file({k: v.contiguous() for k, v in engine_weights.items()}, tmp / ENGINE_FILE)
        # The gathered state, not the (possibly sharded) parameters: with LoRA, peft keeps the adapters.
        policy.model.save_pretrained(tmp / "model", state_dict=model_state, safe_serialization=True)
        policy.tokenizer.save_pretrained(tmp / "model")
        torch.save(extra, tmp / "optimizer.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write(self.root / "latest", final.name)
        self._prune()

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"{pointer} names {path.name}, which is incomplete or missing")
        return path

    def restore(self, path: Path, policy: Policy, learner: Learner, config: dict[str, Any]) -> Resumed:
        """Load a checkpoint into the policy and learner (every rank calls this together)."""
        state = json.loads((path / STATE_FILE).read_text())
        _check_compatible(state.get("config", {}), config, path)
        # The schedule keeps the length it was made with, whatever `steps` the resumed run has.
        schedule_steps = int(state.get("schedule_steps", state.get("config", {}).get("steps", 0)))
        _check_schedule(learner, schedule_steps, int(config.get("steps", 0)), path)
        weights = load_file(path / "trainable.safetensors")
        missing = set(policy.trainable_parameters) - set(weights)
        if missing:
            raise CheckpointError(
                f"{path}: no saved weights for {sorted(missing)[:3]} (another model or LoRA set-up?)"
            )
        load_trainable(policy, weights)
        extra = torch.load(path / "optimizer.pt", weights_only=False)
        learner.set_schedule_steps(schedule_steps)
        if extra["optimizer"]:
            set_optimizer_state_dict(policy.model, learner.optimizer, extra["optimizer"], options=_scatter())
        learner.scheduler.load_state_dict(extra["scheduler"])
        for group, lr in zip(learner.optimizer.param_groups, learner.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # also when no optimizer state was saved
        learner.skipped_steps = extra["skipped_steps"]
        _set_rng_state(extra["rng"])
        engine_file = path / ENGINE_FILE
        engine_weights = load_file(engine_file, device=str(policy.device)) if engine_file.is_file() else None
        return Resumed(step=int(state["step"]), path=path, engine_weights=engine_weights)

    def _prune(self) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for partial in self.root.glob(".step_*.partial"):
            shutil.rmtree(partial, ignore_errors=True)


# -- gathering and scattering the state (collective under torchrun) ----------------------------

# Full tensors on CPU, on rank 0 only (the others get empty dicts); frozen weights are not saved.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def _scatter() -> StateDictOptions:
    """Full tensors in, taken from rank 0 and sharded (FSDP2) or copied (DDP) to every rank."""
    return StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=dist.is_initialized())


def trainable_state_dict(policy: Policy) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights, full, on CPU, on rank 0 ({} on the others); all ranks call it."""
    state = get_model_state_dict(policy.model, options=_GATHER)
    return {name: state[name].clone() for name in policy.trainable_parameters if name in state}


def load_trainable(policy: Policy, weights: dict[str, torch.Tensor]) -> None:
    """Copy full weights (rank 0's under torchrun) into the trainable parameters, sharded or not."""
    set_model_state_dict(policy.model, dict(weights), options=_scatter())


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _gather_objects(value: Any) -> list[Any]:
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def _on_every_rank(ok: bool) -> bool:
    """True if `ok` holds on all ranks (a barrier too)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([1.0 if ok else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(saved: list[dict[str, Any]] | dict[str, Any]) -> None:
    states = saved if isinstance(saved, list) else [saved]  # a dict: written before per-rank states
    rank, world = _rank(), dist.get_world_size() if dist.is_initialized() else 1
    if len(states) != world:
        logger.warning(
            "the checkpoint holds the RNG states of %d ranks and this run has %d: random draws "
            "outside the seeded rollouts will not repeat exactly",
            len(states),
            world,
        )
    rng = states[rank % len(states)]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


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


def _check_schedule(learner: Learner, schedule_steps: int, steps: int, path: Path) -> None:
    """A cosine schedule reaches 0 at its end: steps beyond it would train at learning rate 0."""
    if learner.optim.schedule == "cosine" and steps > schedule_steps:
        raise CheckpointError(
            f"{path} was written by a run whose cosine learning-rate schedule ends at step "
            f"{schedule_steps}; resuming with steps={steps} would train the steps after it at learning "
            f"rate 0. Use steps <= {schedule_steps}, or a new run_dir."
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

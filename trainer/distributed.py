"""Data parallelism under `torchrun`: process-group set-up and wrapping the learner's model.

Each rank plays its own share of a step's groups with its own engine, then the learner's
gradients are summed over ranks. DDP keeps a full copy per rank (generation uses the
unwrapped model). FSDP2 shards parameters, gradients and optimizer state; a sharded model
cannot generate on one rank alone, so with the transformers engine each rank also keeps an
unsharded, gradient-free copy (`Policy.generator`) that gets the full weights after every
step. With vLLM the engine holds its own copy anyway.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
import torch.distributed as dist

from trainer.policy import Policy


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        # CPU tensors (counts, flags, gathered objects) are reduced too: gloo takes those on GPUs.
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def wrap_for_ranks(policy: Policy, kind: str, engine_kind: str = "vllm") -> Any:
    """DDP around the policy's model, or FSDP2 applied in place; returns the model to train."""
    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        if engine_kind == "transformers":
            policy.generator = copy.deepcopy(policy.model).eval().requires_grad_(False)
        return fully_shard(policy.model)
    if kind != "ddp":
        raise ValueError(f"distributed must be 'ddp' or 'fsdp2', got {kind!r}")
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [policy.device.index] if policy.device.type == "cuda" else None
    return DistributedDataParallel(policy.model, device_ids=device_ids)

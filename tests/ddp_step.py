"""Two learner steps on a fixed batch, in one process or under torchrun (tests/test_distributed.py).

FSDP2 runs without the KL term: with LoRA its reference pass is refused (see Learner).

    python tests/ddp_step.py MODEL_DIR OUT.safetensors ddp|fsdp2
    torchrun --nproc-per-node 2 tests/ddp_step.py MODEL_DIR OUT.safetensors ddp|fsdp2

Rank r trains on sequences r, r+W, ...; rank 0 writes the trainable weights afterwards.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from trainer.config import LoraSection, LossSection, ModelSection, OptimSection
from trainer.distributed import init_distributed, wrap_for_ranks
from trainer.learner import Learner, TrainSequence
from trainer.policy import full_tensor, load_policy


def batch() -> list[TrainSequence]:
    """Eight sequences of different lengths and prompt lengths, with mixed advantages."""
    generator = torch.Generator().manual_seed(0)
    sequences = []
    for i in range(8):
        prompt, reply = 3 + i % 3, 2 + (i * 5) % 7
        ids = torch.randint(4, 300, (prompt + reply,), generator=generator).tolist()
        mask = [False] * prompt + [True] * reply
        sampler = [0.0] * prompt + [-5.0] * reply
        sequences.append(
            TrainSequence(tuple(ids), tuple(mask), tuple(sampler), advantage=(-1.0) ** i * (1 + i / 8))
        )
    return sequences


def main(model_dir: str, out: str, kind: str) -> None:
    rank, world = init_distributed()
    torch.manual_seed(0)
    policy = load_policy(
        ModelSection(name=model_dir), LoraSection(enabled=True, rank=4), keep_reference=False
    )
    model = wrap_for_ranks(policy, kind) if world > 1 else None
    learner = Learner(
        policy,
        OptimSection(lr=1e-2, micro_batch_size=2),
        LossSection(algorithm="grpo", kl_coef=0.1 if kind == "ddp" else 0.0, is_cap=2.0),
        max_tokens=8,
        temperature=1.0,
        total_steps=2,
        train_model=model,
    )
    mine = batch()[rank::world]
    for _ in range(2):
        learner.train_step(mine)
    weights = {
        name: full_tensor(p.detach()).cpu().contiguous() for name, p in policy.trainable_parameters.items()
    }
    if rank == 0:
        save_file(weights, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])

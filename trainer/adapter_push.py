"""Pushing the trained LoRA adapter to a remote engine after each optimizer step.

A remote server takes no tensors; it loads adapters from disk (vLLM's runtime LoRA loading,
`POST /v1/load_lora_adapter`). Each push saves the adapter with peft's `save_pretrained` into
a new versioned directory, written under a temporary name and renamed, and has the server
load it under one name, in place. A new path per version also keeps vLLM from reusing prefix
cache blocks computed with older weights. The newest `keep` versions stay on disk.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch.distributed as dist

from trainer.engines.openai_engine import OpenAIEngine
from trainer.policy import Policy, full_tensor

_VERSION = re.compile(r"v(\d+)")


class AdapterPublisher:
    """Saves `policy`'s adapter as `directory/vNNNNNN` and loads it into `engine` as `name`.

    Under torchrun every rank takes part in gathering the weights (FSDP2 shards them), rank 0
    saves and loads, and every rank then generates with `name`.
    """

    def __init__(
        self, engine: OpenAIEngine, policy: Policy, directory: Path, name: str, *, keep: int = 2
    ) -> None:
        if not policy.lora:
            raise ValueError("only LoRA adapters can be pushed to a remote server (lora.enabled = false)")
        self.engine = engine
        self.policy = policy
        self.directory = directory.resolve()  # the server reads it: never relative to our cwd
        self.name = name
        self.keep = keep
        self.version = max(self._versions(), default=0)  # a resumed run carries on numbering

    def push(self) -> Path:
        """Save the current adapter and have the server use it; returns its directory."""
        state = {name: full_tensor(p.detach()) for name, p in self.policy.trainable_parameters.items()}
        self.version += 1
        path = self.directory / f"v{self.version:06d}"
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            partial = self.directory / f".{path.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            self.policy.model.save_pretrained(partial, state_dict=state)
            shutil.rmtree(path, ignore_errors=True)  # left by a run killed after the rename
            partial.rename(path)
            self.engine.load_lora_adapter(self.name, path)
            self._prune()
        if dist.is_initialized():
            dist.barrier()  # no rank generates before the server has the adapter
        self.engine.model = self.name
        return path

    def _versions(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return [int(m.group(1)) for p in self.directory.iterdir() if (m := _VERSION.fullmatch(p.name))]

    def _prune(self) -> None:
        for version in sorted(self._versions())[: -self.keep]:
            shutil.rmtree(self.directory / f"v{version:06d}", ignore_errors=True)

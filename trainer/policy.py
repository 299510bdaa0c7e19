"""The policy being trained: a causal LM from `from_pretrained`, optionally with LoRA adapters.

With LoRA the frozen base model doubles as the KL reference (adapters switched off), so a
reference costs no extra memory; full fine-tuning keeps a frozen copy when KL is on.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainer.config import LoraSection, ModelSection, TrainConfigError


@dataclass
class Policy:
    model: Any  # a transformers causal LM, or a peft model wrapping one
    tokenizer: Any
    device: torch.device
    lora: bool
    reference: Any = None  # frozen copy for full fine-tuning with KL; None with LoRA
    generator: Any = None  # under FSDP2 with the transformers engine: an unsharded copy to generate with

    @property
    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    @contextmanager
    def as_reference(self) -> Iterator[Any]:
        """The model to compute reference logprobs with (the policy before any training)."""
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            if self.reference is None:
                raise RuntimeError("no reference model was kept (kl_coef was 0 when the policy was loaded)")
            yield self.reference

    def merged_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Weights to push into a separate inference engine, with Hugging Face names.

        With LoRA, only the adapted layers change: each is yielded as W + scale·B·A.
        """
        if not self.lora:
            yield from ((name, full_tensor(p.detach())) for name, p in self.model.named_parameters())
            return
        from peft.tuners.lora import LoraLayer

        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                delta = module.get_delta_weight("default")
                hf_name = name.removeprefix("base_model.model.") + ".weight"
                weight = full_tensor(base.weight.detach())
                yield hf_name, (weight + full_tensor(delta.detach())).to(weight.dtype)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor, also when FSDP2 holds only this rank's shard (a DTensor)."""
    gather = getattr(tensor, "full_tensor", None)
    return gather() if gather is not None else tensor


def load_policy(model_cfg: ModelSection, lora_cfg: LoraSection, *, keep_reference: bool) -> Policy:
    """Load the model through `from_pretrained` (the same path users load it with)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.models import resolve_model

    path = resolve_model(model_cfg.name)
    device_name = model_cfg.device
    if device_name == "auto":  # under torchrun each rank takes the GPU of its local rank
        device_name = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if model_cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, model_cfg.dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    if model_cfg.gradient_checkpointing:
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.x on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
        model.config.use_cache = False  # generation turns the cache back on per call
    reference = None
    if lora_cfg.enabled:
        from peft import LoraConfig, get_peft_model

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in lora_cfg.target_modules if t in present]
        if not targets:
            raise TrainConfigError(
                f"none of lora.target_modules {list(lora_cfg.target_modules)} are layers of {path.name}"
            )
        config = LoraConfig(
            r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout, target_modules=targets
        )
        model = get_peft_model(model, config)
        if model_cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    elif keep_reference:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    return Policy(model=model, tokenizer=tokenizer, device=device, lora=lora_cfg.enabled, reference=reference)

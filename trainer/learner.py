"""The learner: token-level trajectories in, one optimizer step out.

Per step: (optionally) old and reference logprobs without gradient, then for each epoch
the micro-batches' losses are back-propagated and accumulated, gradients clipped, and
AdamW steps. Loss weights are computed for the whole batch (all ranks) up front, so
accumulation and data parallelism give the full-batch gradient exactly. A non-finite
loss or gradient skips the step (counted) instead of writing NaNs into the weights.

Shapes: B sequences in a micro-batch, T padded length, K positions whose logits we need
(the sampled region, from the first sampled token to the end), V vocabulary.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from trainer.config import LossSection, OptimSection
from trainer.losses import LossTerms, policy_loss, token_weights
from trainer.policy import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSequence:
    """One trajectory as the learner sees it."""

    token_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]  # True on tokens the policy sampled
    sampler_logprobs: tuple[float, ...]  # the engine's, 0 where not sampled
    advantage: float


@dataclass
class _MicroBatch:
    input_ids_BT: torch.Tensor
    attention_mask_BT: torch.Tensor
    position_ids_BT: torch.Tensor
    keep: int  # logits needed for the last `keep` positions
    targets_BK: torch.Tensor  # tokens at the last keep-1 positions
    mask_BK: torch.Tensor
    sampler_logprobs_BK: torch.Tensor
    advantages_B: torch.Tensor
    old_logprobs_BK: torch.Tensor | None = None
    ref_logprobs_BK: torch.Tensor | None = None


@dataclass
class _Totals:
    """Sums over a step's micro-batches for the metrics."""

    tokens: float = 0.0
    clipped_low: float = 0.0
    clipped_high: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    is_weight: float = 0.0
    ratio_min: float = math.inf
    ratio_max: float = -math.inf
    losses: list[float] = field(default_factory=list)

    def add(self, terms: LossTerms, mask_BK: torch.Tensor, entropy_BK: torch.Tensor) -> None:
        m = mask_BK.float()
        self.tokens += m.sum().item()
        self.clipped_low += terms.clipped_low_BT.float().sum().item()
        self.clipped_high += terms.clipped_high_BT.float().sum().item()
        self.kl += (terms.kl_BT * m).sum().item()
        self.entropy += (entropy_BK * m).sum().item()
        self.is_weight += (terms.is_weight_BT * m).sum().item()
        active = terms.ratio_BT[mask_BK.bool()]
        if active.numel():
            self.ratio_min = min(self.ratio_min, active.min().item())
            self.ratio_max = max(self.ratio_max, active.max().item())
        self.losses.append(terms.loss.item())


class Learner:
    def __init__(
        self,
        policy: Policy,
        optim: OptimSection,
        loss: LossSection,
        *,
        max_tokens: int,
        temperature: float,
        total_steps: int,
        train_model: Any = None,  # the DDP/FSDP-wrapped model under torchrun; else the policy's
    ) -> None:
        self.policy = policy
        self.model = train_model if train_model is not None else policy.model
        self.optim = optim
        self.loss_cfg = loss
        self.settings = loss.settings()
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        params = list(policy.trainable_parameters.values())
        if not params:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay, foreach=False
        )
        self.schedule_steps = total_steps  # the schedule's length, kept by checkpoints
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(optim.warmup_steps, total_steps, optim.schedule)
        )
        self.skipped_steps = 0
        if type(self.model).__name__.startswith("FSDP") and policy.lora and self.settings.kl_coef:
            # Switching peft adapters off and on inside an FSDP2-sharded module leaves the
            # adapters without gradients on torch 2.13 (checked on CPU/gloo).
            raise ValueError(
                "FSDP2 with LoRA cannot use the KL reference (kl_coef > 0); use DDP or kl_coef = 0"
            )

    def set_schedule_steps(self, total_steps: int) -> None:
        """Give the learning-rate schedule another length (a resumed run keeps its original one)."""
        self.schedule_steps = total_steps
        self.scheduler.lr_lambdas = [_schedule(self.optim.warmup_steps, total_steps, self.optim.schedule)]

    # -- one step ------------------------------------------------------------------------------

    def train_step(self, sequences: Sequence[TrainSequence]) -> dict[str, float]:
        """One optimizer step on this rank's sequences (every rank calls this together)."""
        num_sequences, num_tokens = self._global_counts(sequences)
        micro = [
            self._collate(sequences[i : i + self.optim.micro_batch_size])
            for i in range(0, len(sequences), self.optim.micro_batch_size)
        ]
        self.model.train()
        if self.loss_cfg.epochs > 1:
            for mb in micro:
                mb.old_logprobs_BK = self._logprobs(self.policy.model, mb, grad=False)[0]
        if self.settings.kl_coef:
            with self.policy.as_reference() as reference:
                for mb in micro:
                    mb.ref_logprobs_BK = self._logprobs(reference, mb, grad=False)[0]
        totals = _Totals()
        grad_norm = math.nan
        nonfinite = False
        for _epoch in range(self.loss_cfg.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for index, mb in enumerate(micro):
                weights_BK = token_weights(
                    mb.mask_BK,
                    self.settings.algorithm,
                    num_sequences=num_sequences,
                    num_tokens=num_tokens,
                    max_tokens=self.max_tokens,
                )
                last = index == len(micro) - 1
                with _maybe_no_sync(self.model, sync=last):
                    logprobs_BK, entropy_BK = self._logprobs(self.model, mb, grad=True)
                    old = mb.old_logprobs_BK if mb.old_logprobs_BK is not None else logprobs_BK.detach()
                    terms = policy_loss(
                        logprobs_BK,
                        old,
                        mb.advantages_B,
                        mb.mask_BK,
                        weights_BK,
                        self.settings,
                        ref_logprobs_BT=mb.ref_logprobs_BK,
                        sampler_logprobs_BT=mb.sampler_logprobs_BK,
                    )
                    nonfinite |= not torch.isfinite(terms.loss).item()
                    # DDP and FSDP average gradients over ranks; the weights already divide by the
                    # global totals, so undo the average to get the sum.
                    (terms.loss * self.world_size).backward()
                totals.add(terms, mb.mask_BK, entropy_BK)
            if not micro:  # a rank with nothing to train still joins the gradient all-reduce
                with _maybe_no_sync(self.model, sync=True):
                    self._zero_loss().backward()
            grad_norm = self._clip()
            nonfinite |= not math.isfinite(grad_norm)
            nonfinite = self._any_rank(nonfinite)
            if nonfinite:
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                logger.warning(
                    "non-finite loss or gradient: optimizer step skipped (%d so far)", self.skipped_steps
                )
                break
            self.optimizer.step()
        self.scheduler.step()
        return self._metrics(totals, grad_norm, nonfinite)

    # -- pieces --------------------------------------------------------------------------------

    def _collate(self, sequences: Sequence[TrainSequence]) -> _MicroBatch:
        """Left-pad so every sequence ends at the last column: the sampled regions line up."""
        device = self.policy.device
        pad = self.policy.tokenizer.pad_token_id or 0
        width = max(len(s.token_ids) for s in sequences)
        first_sampled = min(
            width - len(s.token_ids) + s.loss_mask.index(True) if any(s.loss_mask) else width - 1
            for s in sequences
        )
        keep = max(width - first_sampled + 1, 2)  # logits from the position before the first sampled token

        def padded(values: Sequence[Any], fill: Any) -> list[Any]:
            return [fill] * (width - len(values)) + list(values)

        input_ids = torch.tensor([padded(s.token_ids, pad) for s in sequences], device=device)
        attention = torch.tensor([padded([1] * len(s.token_ids), 0) for s in sequences], device=device)
        mask = torch.tensor([padded(s.loss_mask, False) for s in sequences], device=device)
        sampler = torch.tensor([padded(s.sampler_logprobs, 0.0) for s in sequences], device=device)
        return _MicroBatch(
            input_ids_BT=input_ids,
            attention_mask_BT=attention,
            position_ids_BT=(attention.cumsum(dim=1) - 1).clamp_min(0),
            keep=keep,
            targets_BK=input_ids[:, width - keep + 1 :],
            mask_BK=mask[:, width - keep + 1 :],
            sampler_logprobs_BK=sampler[:, width - keep + 1 :],
            advantages_B=torch.tensor([s.advantage for s in sequences], device=device),
        )

    def _logprobs(self, model: Any, mb: _MicroBatch, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logprobs (B, K-1) of the tokens in the kept region under logits / temperature, and entropy."""
        with torch.set_grad_enabled(grad):
            out = model(
                input_ids=mb.input_ids_BT,
                attention_mask=mb.attention_mask_BT,
                position_ids=mb.position_ids_BT,
                logits_to_keep=mb.keep,
                use_cache=False,
            )
            logits_BKV = out.logits[:, :-1].float() / self.temperature
            normaliser_BK = torch.logsumexp(logits_BKV, dim=-1)
            chosen_BK = logits_BKV.gather(-1, mb.targets_BK[..., None])[..., 0]
            logprobs_BK = chosen_BK - normaliser_BK
        with torch.no_grad():
            probs_BKV = torch.softmax(logits_BKV.detach(), dim=-1)
            entropy_BK = normaliser_BK.detach() - (probs_BKV * logits_BKV.detach()).sum(-1)
        return logprobs_BK, entropy_BK

    def _clip(self) -> float:
        params = [p for p in self.policy.trainable_parameters.values() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.optim.max_grad_norm if self.optim.max_grad_norm is not None else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _zero_loss(self) -> torch.Tensor:
        return sum((p.sum() * 0.0 for p in self.policy.trainable_parameters.values()), torch.zeros(()))

    def _global_counts(self, sequences: Sequence[TrainSequence]) -> tuple[int, int]:
        counts = torch.tensor([len(sequences), sum(sum(s.loss_mask) for s in sequences)], dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(counts)
        return int(counts[0]), int(counts[1])

    def _any_rank(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def _metrics(self, totals: _Totals, grad_norm: float, skipped: bool) -> dict[str, float]:
        tokens = max(totals.tokens, 1.0)
        return {
            "loss": sum(totals.losses) if totals.losses else math.nan,
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
            "entropy": totals.entropy / tokens,
            "kl": totals.kl / tokens,
            "clip_frac/low": totals.clipped_low / tokens,
            "clip_frac/high": totals.clipped_high / tokens,
            "is_weight/mean": totals.is_weight / tokens,
            "ratio/min": totals.ratio_min if math.isfinite(totals.ratio_min) else math.nan,
            "ratio/max": totals.ratio_max if math.isfinite(totals.ratio_max) else math.nan,
            "steps/skipped_nan": float(self.skipped_steps),
            "step_skipped": float(skipped),
        }


def _schedule(warmup: int, total: int, kind: str) -> Any:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def _maybe_no_sync(model: Any, *, sync: bool) -> Any:
    """Skip DDP's gradient all-reduce on all but the last micro-batch."""
    from contextlib import nullcontext

    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return nullcontext()

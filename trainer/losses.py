"""GRPO-family policy losses on token-level tensors, in one place, readable top to bottom.

Shapes: B sequences (a micro-batch), T token positions. Every tensor is aligned so that
position t holds something about token t of the sequence (its logprob, whether it was
sampled); prompt and environment tokens have `mask_BT == 0`.

The four algorithms differ in three choices (REFERENCE.md, "Algorithms"):

| algorithm | importance ratio        | clip (low, high) | how token losses are averaged          |
|-----------|-------------------------|------------------|----------------------------------------|
| grpo      | per token               | 0.2, 0.2         | mean over each sequence, then over seqs |
| dr_grpo   | per token               | 0.2, 0.2         | sum over tokens / (B_total × max_len)   |
| dapo      | per token               | 0.2, 0.28        | mean over all tokens of the batch       |
| gspo      | per sequence (geo mean) | 3e-4, 4e-4       | one loss per sequence, mean over seqs   |

(Dr. GRPO also drops the std division from the advantages; see `advantages.py`.)

The averaging is expressed as a weight per token computed once for the whole batch
(`token_weights`), so the loss of a micro-batch is `sum(weights * token_loss)` and
gradient accumulation over micro-batches (or ranks) gives exactly the full-batch loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Algorithm = Literal["grpo", "dr_grpo", "dapo", "gspo"]
ALGORITHMS: tuple[Algorithm, ...] = ("grpo", "dr_grpo", "dapo", "gspo")
DEFAULT_CLIP: dict[Algorithm, tuple[float, float]] = {
    "grpo": (0.2, 0.2),
    "dr_grpo": (0.2, 0.2),
    "dapo": (0.2, 0.28),
    "gspo": (3e-4, 4e-4),
}


@dataclass(frozen=True)
class LossSettings:
    algorithm: Algorithm = "grpo"
    clip_low: float = 0.2  # ratio floor is 1 - clip_low
    clip_high: float = 0.2  # ratio ceiling is 1 + clip_high
    kl_coef: float = 0.0  # β for the k3 estimate of KL(policy || reference)
    is_cap: float | None = None  # truncated importance sampling between engine and trainer logprobs

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; choose one of {ALGORITHMS}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(
                f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}"
            )
        if self.is_cap is not None and self.is_cap <= 0:
            raise ValueError(f"is_cap must be > 0, got {self.is_cap}")


@dataclass(frozen=True)
class LossTerms:
    """The micro-batch loss and per-token diagnostics (detached) for metrics."""

    loss: torch.Tensor  # scalar, already weighted: sum these over micro-batches
    ratio_BT: torch.Tensor  # the importance ratio used (per sequence, broadcast, for GSPO)
    clipped_low_BT: torch.Tensor  # bool: the lower clip bound was active for this token
    clipped_high_BT: torch.Tensor  # bool: the upper clip bound was active
    kl_BT: torch.Tensor  # k3 estimate per token (zeros without a reference)
    is_weight_BT: torch.Tensor  # truncated importance weights (ones when off)


def token_weights(
    mask_BT: torch.Tensor, algorithm: Algorithm, *, num_sequences: int, num_tokens: int, max_tokens: int
) -> torch.Tensor:
    """Per-token weights so that `sum(weights * token_loss)` is the algorithm's batch loss.

    `num_sequences` and `num_tokens` count the whole batch (all micro-batches, all ranks);
    `max_tokens` is Dr. GRPO's constant normaliser (the generation budget).
    """
    mask = mask_BT.float()
    if algorithm in ("grpo", "gspo"):
        lengths_B = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return mask / lengths_B / num_sequences
    if algorithm == "dapo":
        return mask / max(num_tokens, 1)
    if algorithm == "dr_grpo":
        return mask / (num_sequences * max_tokens)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def k3_kl(logprobs_BT: torch.Tensor, ref_logprobs_BT: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref) per token: e^(ref-lp) - (ref-lp) - 1 >= 0."""
    delta_BT = ref_logprobs_BT - logprobs_BT
    return torch.exp(delta_BT) - delta_BT - 1.0


def policy_loss(
    logprobs_BT: torch.Tensor,  # trainer logprobs of each token, with gradient
    old_logprobs_BT: torch.Tensor,  # logprobs of the policy that sampled (trainer's recompute)
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    weights_BT: torch.Tensor,  # from token_weights
    settings: LossSettings,
    *,
    ref_logprobs_BT: torch.Tensor | None = None,  # frozen reference, for the KL term
    sampler_logprobs_BT: torch.Tensor | None = None,  # the engine's own, for IS correction
) -> LossTerms:
    mask = mask_BT.float()
    old_logprobs_BT = old_logprobs_BT.detach()
    log_ratio_BT = (logprobs_BT - old_logprobs_BT) * mask
    if settings.algorithm == "gspo":
        # s_i = exp(mean_t log ρ_t), one ratio per sequence; written as sg(s_i) * exp(lp - sg(lp))
        # so its value is s_i while each token's gradient is s_i * ∇lp_t / |y_i|.
        lengths_B = mask.sum(dim=1).clamp_min(1.0)
        seq_log_ratio_B = log_ratio_BT.sum(dim=1) / lengths_B
        ratio_BT = torch.exp(seq_log_ratio_B.detach())[:, None] * torch.exp(
            logprobs_BT - logprobs_BT.detach()
        )
    else:
        ratio_BT = torch.exp(log_ratio_BT)
    adv_BT = advantages_B[:, None].to(ratio_BT.dtype)
    low, high = 1.0 - settings.clip_low, 1.0 + settings.clip_high
    unclipped_BT = ratio_BT * adv_BT
    clipped_BT = torch.clamp(ratio_BT, low, high) * adv_BT
    token_loss_BT = -torch.minimum(unclipped_BT, clipped_BT)

    is_weight_BT = torch.ones_like(token_loss_BT)
    if settings.is_cap is not None and sampler_logprobs_BT is not None:
        # The engine sampled from a slightly different distribution than the trainer computes
        # (other kernels, precision): reweight by min(π_trainer / π_engine, cap).
        is_weight_BT = torch.clamp(torch.exp(old_logprobs_BT - sampler_logprobs_BT), max=settings.is_cap)
        is_weight_BT = (is_weight_BT * mask + (1 - mask)).detach()
        token_loss_BT = token_loss_BT * is_weight_BT

    kl_BT = torch.zeros_like(token_loss_BT)
    if settings.kl_coef and ref_logprobs_BT is not None:
        kl_BT = k3_kl(logprobs_BT, ref_logprobs_BT.detach())
        token_loss_BT = token_loss_BT + settings.kl_coef * kl_BT

    loss = (token_loss_BT * weights_BT).sum()
    with torch.no_grad():
        active = mask.bool()
        clipped_low_BT = active & (ratio_BT < low) & (adv_BT < 0)
        clipped_high_BT = active & (ratio_BT > high) & (adv_BT > 0)
    return LossTerms(
        loss=loss,
        ratio_BT=ratio_BT.detach(),
        clipped_low_BT=clipped_low_BT,
        clipped_high_BT=clipped_high_BT,
        kl_BT=kl_BT.detach(),
        is_weight_BT=is_weight_BT,
    )

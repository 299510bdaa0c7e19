"""Each loss and advantage estimator against numbers worked out by hand (in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.advantages import group_advantages, group_std
from trainer.losses import LossSettings, k3_kl, policy_loss, token_weights


# Two sequences, three positions. Position 0 is prompt (mask 0).
# Sequence 0 samples two tokens with ratios 1.5 and 0.5 and advantage +1;
# sequence 1 samples one token with ratio 1.1 and advantage -2.
def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual.float(), torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)


MASK = torch.tensor([[0, 1, 1], [0, 1, 0]])
LOG_RATIOS = torch.tensor([[0.0, math.log(1.5), math.log(0.5)], [0.0, math.log(1.1), 0.0]])
ADVANTAGES = torch.tensor([1.0, -2.0])


def run(settings: LossSettings, *, max_tokens: int = 4, **extra: torch.Tensor):
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    logprobs = (old + LOG_RATIOS).clone().requires_grad_(True)
    weights = token_weights(
        MASK, settings.algorithm, num_sequences=2, num_tokens=int(MASK.sum()), max_tokens=max_tokens
    )
    terms = policy_loss(logprobs, old, ADVANTAGES, MASK, weights, settings, **extra)
    terms.loss.backward()
    return terms, logprobs.grad


def test_grpo_clips_per_token_and_averages_per_sequence() -> None:
    # token losses: -min(1.5·1, 1.2·1) = -1.2; -min(0.5, 0.8) = -0.5; -min(1.1·-2, 1.1·-2) = 2.2
    # per sequence: (-1.2 - 0.5) / 2 = -0.85 and 2.2 / 1; mean over sequences = 0.675
    terms, grad = run(LossSettings("grpo", 0.2, 0.2))
    assert terms.loss.item() == pytest.approx(0.675, abs=1e-6)
    # clipped token: no gradient; others: -ratio·A·weight = -0.5·1/4 and -1.1·(-2)/2
    close(grad, [[0, 0, -0.125], [0, 1.1, 0]])
    assert terms.clipped_high_BT.tolist() == [[False, True, False], [False, False, False]]
    assert not terms.clipped_low_BT.any()  # ratio 0.5 < 0.8 but A > 0: the unclipped term is smaller


def test_dapo_is_token_level_with_clip_higher() -> None:
    # 1.5 is clipped at 1.28: token losses -1.28, -0.5, 2.2; mean over all 3 tokens = 0.14
    terms, grad = run(LossSettings("dapo", 0.2, 0.28))
    assert terms.loss.item() == pytest.approx(0.14, abs=1e-6)
    close(grad, [[0, 0, -0.5 / 3], [0, 2.2 / 3, 0]])


def test_dr_grpo_divides_by_a_constant_not_by_lengths() -> None:
    # sum of token losses (-1.2 - 0.5 + 2.2 = 0.5) / (B=2 × max_tokens=4) = 0.0625
    terms, _ = run(LossSettings("dr_grpo", 0.2, 0.2), max_tokens=4)
    assert terms.loss.item() == pytest.approx(0.0625, abs=1e-6)


def test_gspo_uses_one_geometric_mean_ratio_per_sequence() -> None:
    # s_0 = exp((ln 1.5 + ln 0.5) / 2) = sqrt(0.75) = 0.8660 (inside [0.8, 1.2]): loss -0.8660
    # s_1 = 1.1 with A = -2: loss 2.2.  Mean over sequences: (−0.8660 + 2.2) / 2 = 0.6670
    terms, grad = run(LossSettings("gspo", 0.2, 0.2))
    s0 = math.sqrt(0.75)
    assert terms.loss.item() == pytest.approx((-s0 + 2.2) / 2, abs=1e-6)
    assert terms.ratio_BT[0, 1].item() == pytest.approx(s0, abs=1e-6)
    assert terms.ratio_BT[0, 2].item() == pytest.approx(s0, abs=1e-6)
    # d/dlp_t of -A·s_i/B with s_i = exp(mean lp): -A·s_i/(|y_i|·B) for each token of sequence i
    close(grad, [[0, -s0 / 4, -s0 / 4], [0, 1.1, 0]])


def test_gspo_clips_the_whole_sequence() -> None:
    # with GSPO's default clip (3e-4, 4e-4): s_1 = 1.1 > 1.0004 with A < 0: unclipped term -2.2
    # is the minimum, so it is used (no clip); s_0 = 0.866 < 0.9997 with A > 0: also unclipped.
    terms, _ = run(LossSettings("gspo", 3e-4, 4e-4))
    assert not terms.clipped_low_BT.any() and not terms.clipped_high_BT.any()
    # a positive-advantage sequence above the ceiling is clipped, as a whole
    old = torch.zeros(1, 3)
    logprobs = torch.tensor([[0.0, 0.1, 0.1]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1]])
    weights = token_weights(mask, "gspo", num_sequences=1, num_tokens=2, max_tokens=4)
    terms = policy_loss(logprobs, old, torch.tensor([1.0]), mask, weights, LossSettings("gspo", 3e-4, 4e-4))
    assert terms.loss.item() == pytest.approx(-1.0004, abs=1e-6)
    assert terms.clipped_high_BT.tolist() == [[False, True, True]]
    terms.loss.backward()
    assert torch.all(logprobs.grad == 0)


def test_k3_kl_term() -> None:
    # ref - lp = ln 2: e^(ln 2) - ln 2 - 1 = 0.30685; zero where the two agree
    logprobs = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.0 + math.log(2.0), -1.0]])
    close(k3_kl(logprobs, ref), [[2 - math.log(2) - 1, 0.0]])
    # added to GRPO's loss with β = 0.1, weighted like the token losses
    ref_BT = torch.tensor(
        [[-1.0, -2.0 + math.log(1.5) + math.log(2.0), -0.5 + math.log(0.5)], [0.0, 0.0, 0.0]]
    )
    ref_BT[1] = torch.tensor([-1.5, -0.7 + math.log(1.1), -3.0])  # agrees with the policy
    terms, _ = run(LossSettings("grpo", 0.2, 0.2, kl_coef=0.1), ref_logprobs_BT=ref_BT)
    kl0 = 2 - math.log(2) - 1
    assert terms.kl_BT[0, 1].item() == pytest.approx(kl0, abs=1e-6)
    assert terms.loss.item() == pytest.approx(0.675 + 0.1 * kl0 / 4, abs=1e-6)


def test_truncated_importance_weights_between_engine_and_trainer() -> None:
    # trainer/engine probability ratios 3 (capped at 2) and 0.5 on sequence 0; 1 on sequence 1
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    sampler = old - torch.tensor([[0.0, math.log(3.0), math.log(0.5)], [0.0, 0.0, 0.0]])
    terms, _ = run(LossSettings("grpo", 0.2, 0.2, is_cap=2.0), sampler_logprobs_BT=sampler)
    close(terms.is_weight_BT, [[1, 2, 0.5], [1, 1, 1]])
    # (-1.2·2 - 0.5·0.5) / 2 / 2 + 2.2 / 2 = -0.6625 + 1.1
    assert terms.loss.item() == pytest.approx(-0.6625 + 1.1, abs=1e-6)


def test_micro_batches_add_up_to_the_full_batch_loss() -> None:
    settings = LossSettings("dapo", 0.2, 0.28)
    full, _ = run(settings)
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    logprobs = old + LOG_RATIOS
    weights = token_weights(MASK, "dapo", num_sequences=2, num_tokens=3, max_tokens=4)
    parts = [
        policy_loss(
            logprobs[i : i + 1],
            old[i : i + 1],
            ADVANTAGES[i : i + 1],
            MASK[i : i + 1],
            weights[i : i + 1],
            settings,
        ).loss
        for i in range(2)
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(full.loss.item(), abs=1e-6)


def test_group_advantages() -> None:
    # mean 0.5, sample std sqrt(4 · 0.25 / 3) = 0.57735 → ±0.866
    assert group_advantages([1, 0, 0, 1], scale="std") == pytest.approx(
        [0.866, -0.866, -0.866, 0.866], abs=2e-3
    )
    assert group_advantages([1, 0, 0, 1], scale="none") == [0.5, -0.5, -0.5, 0.5]
    assert group_advantages([1, 1, 1], scale="std") == [0.0, 0.0, 0.0]  # zero-variance group
    assert group_std([3.0]) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        group_advantages([1.0, math.nan], scale="std")


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        LossSettings("ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_low"):
        LossSettings("grpo", clip_low=1.5)

"""Bradley–Terry strengths from pairwise outcomes: P(i ≻ j) = σ(θ_i − θ_j).

A tournament's win rate only counts wins; Bradley–Terry also weighs *whom* one beat, and
with chunks or random opponents (where players meet different opponents) it puts all on
one scale. Outcomes may be soft (the judge's probability). A small Gaussian prior keeps
strengths finite when a player wins or loses every match, and makes disconnected chunks
meet at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bradley_terry(
    num_players: int,
    outcomes: Sequence[tuple[int, int, float]],
    *,
    prior: float = 0.1,
    iterations: int = 100,
    tolerance: float = 1e-9,
) -> np.ndarray:
    """Strengths θ (mean 0) maximising Σ log-likelihood of `outcomes` − prior/2·‖θ‖².

    `outcomes` are (i, j, y) with y = P(i beats j) in [0, 1] (1 win, 0 loss, 0.5 tie).
    Newton's method on a strictly concave objective: converges in a few steps.
    """
    if prior <= 0:
        raise ValueError(f"prior must be positive (it keeps strengths finite), got {prior}")
    theta_P = np.zeros(num_players)
    if not outcomes:
        return theta_P
    i_M = np.array([o[0] for o in outcomes])
    j_M = np.array([o[1] for o in outcomes])
    y_M = np.array([o[2] for o in outcomes], dtype=float)
    if np.any((y_M < 0) | (y_M > 1)):
        raise ValueError("outcomes must be probabilities in [0, 1]")
    for _ in range(iterations):
        p_M = 1.0 / (1.0 + np.exp(-(theta_P[i_M] - theta_P[j_M])))  # P(i beats j) under θ
        residual_M = y_M - p_M
        gradient_P = np.bincount(i_M, residual_M, num_players) - np.bincount(j_M, residual_M, num_players)
        gradient_P -= prior * theta_P
        weight_M = p_M * (1.0 - p_M)
        hessian_PP = -prior * np.eye(num_players)  # negative definite
        np.add.at(hessian_PP, (i_M, i_M), -weight_M)
        np.add.at(hessian_PP, (j_M, j_M), -weight_M)
        np.add.at(hessian_PP, (i_M, j_M), weight_M)
        np.add.at(hessian_PP, (j_M, i_M), weight_M)
        step_P = np.linalg.solve(hessian_PP, gradient_P)
        theta_P -= step_P
        if np.max(np.abs(step_P)) < tolerance:
            break
    return theta_P - theta_P.mean()

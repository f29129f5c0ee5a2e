"""Adversarial training of the MF on its parameters (AT, APR-style) and its random-noise control (RAT).

Each step perturbs the factor tables by Δ whose every row has L2 norm ε (0.03) and minimises
the clean loss plus the MSE under P + Δ_P, Q + Δ_Q. AT takes Δ along the gradient of the clean
loss (the worst case to first order); RAT draws Δ from a truncated normal N(0, 0.01²) (cut at
two standard deviations) and rescales its rows to norm ε.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from central.rating_mf import MatrixFactorization

EPSILON = 0.03


def _rows_with_norm(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    return F.normalize(delta, dim=1) * epsilon  # all-zero rows stay zero


class AdversarialPerturbation:
    """AT: Δ = ε · ∇L / ‖∇L‖ per row of P and Q, ∇L the clean batch loss's gradient (rows outside the
    batch get no perturbation)."""

    def __init__(self, epsilon: float = EPSILON) -> None:
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = epsilon

    def __call__(self, model: MatrixFactorization, grad_users: torch.Tensor,
                 grad_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _rows_with_norm(grad_users, self.epsilon), _rows_with_norm(grad_items, self.epsilon)


class RandomPerturbation:
    """RAT: Δ from a truncated normal N(0, 0.01²), rows rescaled to norm ε."""

    def __init__(self, epsilon: float = EPSILON, std: float = 0.01) -> None:
        if epsilon <= 0 or std <= 0:
            raise ValueError(f"epsilon and std must be > 0, got {epsilon} and {std}")
        self.epsilon, self.std = epsilon, std

    def _draw(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.empty_like(like)
        torch.nn.init.trunc_normal_(noise, std=self.std, a=-2 * self.std, b=2 * self.std, generator=generator)
        return _rows_with_norm(noise, self.epsilon)

    def __call__(self, model: MatrixFactorization, grad_users: torch.Tensor,
                 grad_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self._draw(model.user_factors, model.generator), self._draw(model.item_factors, model.generator)

"""Projected gradient ascent on fake users' ratings through one unrolled surrogate update (PGA, TNA).

The fake rating matrix R_f (normalised, dense over all items) acts on the surrogate MF (P, Q):
the fake users' factors are the ridge solution P_f = R_f Q (QᵀQ + λI)⁻¹, and the item factors
take one gradient step of the MSE on the fake ratings, Q' = Q + η (R_f − P_f Qᵀ)ᵀ P_f / n_f.
The attack objective J(P, Q') is maximised over R_f by gradient steps (scaled so that each fake
user's largest entry moves by ``STEP``) projected onto the rating range; each fake user then keeps its ``num_fillers`` largest optimised ratings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P, Q') -> scalar to maximise

ITERATIONS = 30
STEP = 0.05  # largest change of a fake user's normalised rating per step
UNROLL_LR = 1.0  # η of the unrolled item-factor update
RIDGE = 1.0


def poisoned_item_factors(fake: torch.Tensor, item_factors: torch.Tensor) -> torch.Tensor:
    """Q' after one gradient step on the fake users' dense ratings (differentiable in ``fake``)."""
    gram = item_factors.T @ item_factors + RIDGE * torch.eye(item_factors.shape[1])
    fake_users = torch.linalg.solve(gram, (fake @ item_factors).T).T
    residual = fake - fake_users @ item_factors.T
    return item_factors + UNROLL_LR * residual.T @ fake_users / fake.shape[0]


def optimise_profiles(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
                      objective: Objective, rng: np.random.Generator) -> FakeProfiles:
    surrogate = knowledge.surrogate()
    user_factors = surrogate.user_factors.detach()
    item_factors = surrogate.item_factors.detach()
    grid = knowledge.grid
    low = grid.low / grid.high
    fake = torch.as_tensor(rng.uniform(low, 1.0, size=(num_fake, knowledge.num_items)), dtype=torch.float32)
    target_index = torch.as_tensor(targets, dtype=torch.int64)
    for _ in range(ITERATIONS):
        fake.requires_grad_(True)
        fake_with_targets = fake.index_fill(1, target_index, 1.0)
        value = objective(user_factors, poisoned_item_factors(fake_with_targets, item_factors))
        (gradient,) = torch.autograd.grad(value, fake)
        scale = gradient.abs().amax(1, keepdim=True).clamp_min(1e-12)
        fake = (fake.detach() + STEP * gradient / scale).clamp_(low, 1.0)
    fake[:, target_index] = -1.0  # never a filler
    fillers = fake.topk(num_fillers, dim=1).indices
    ratings = grid.denormalise(fake.gather(1, fillers)).numpy()
    return assemble(fillers.numpy(), ratings, targets, grid)

"""S-TNA (Fang et al. 2020): pick the most influential known users, then optimise the fake ratings
so that, for those users, the targets outscore the items of their current top-K lists:
J = Σ_{u∈S} Σ_t Σ_{i∈L_u} σ((r̂_ut − r̂_ui) / b).

The surrogate is the ALS fixed point of the known ratings (``fixed_point``). The influence of
user u on J (over all known users) is the influence function of its ratings z = (u, i, r_ui):
removing them changes J by ≈ Σ_i ∇_θJᵀ H⁻¹ ∇_θℓ_z = Σ_i e_ui · dJ/dr_ui (e the prediction error),
with H⁻¹∇_θJ by conjugate gradients; the ``INFLUENTIAL_SHARE`` of users with the largest
|influence| form S.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.data_poisoning.fixed_point import FixedPointMF
from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles
from attacks.data_poisoning.surrogate_ascent import INITIAL_SWEEPS, optimise_profiles, poisoned_surrogate

TOP_K = 50
WIDTH = 0.01  # b
INFLUENTIAL_SHARE = 0.1


def _gap_objective(users: torch.Tensor, top_lists: torch.Tensor, targets: torch.Tensor):
    def objective(user_factors: torch.Tensor, item_factors: torch.Tensor) -> torch.Tensor:
        p = user_factors[users]
        target_scores = p @ item_factors[targets].T  # [U, T]
        list_scores = (p.unsqueeze(1) * item_factors[top_lists]).sum(2)  # [U, K]
        return torch.sigmoid((target_scores.unsqueeze(2) - list_scores.unsqueeze(1)) / WIDTH).sum()

    return objective


def influential_users(model: FixedPointMF, known: torch.Tensor, num_users: int, targets: torch.Tensor,
                      top_lists: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` users whose known ratings have the largest |influence| on J (all users' top lists)."""
    objective = _gap_objective(torch.arange(num_users), top_lists, targets)
    weights = model.objective_weights(objective, num_users, known)
    gradient = model.rating_gradient(weights, model.users, model.items)  # dJ/dr of every known rating
    errors = torch.linalg.vecdot(model.user_factors[model.users], model.item_factors[model.items]) - known
    influence = torch.zeros(num_users).index_add_(0, model.users, errors * gradient).abs()
    return influence.topk(count).indices


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    empty = torch.zeros(0, dtype=torch.int64)
    model, known = poisoned_surrogate(knowledge, 0, empty, empty)  # the clean surrogate
    model.solve(known, INITIAL_SWEEPS)
    target_index = torch.as_tensor(targets, dtype=torch.int64)
    scores = model.user_factors @ model.item_factors.T
    scores[model.users, model.items] = float("-inf")
    scores[:, target_index] = float("-inf")
    top_lists = scores.topk(TOP_K, dim=1).indices
    count = max(1, int(round(INFLUENTIAL_SHARE * len(np.unique(knowledge.users)))))
    chosen = influential_users(model, known, knowledge.num_users, target_index, top_lists, count)
    objective = _gap_objective(chosen, top_lists[chosen], target_index)
    return optimise_profiles(knowledge, targets, num_fake, num_fillers, objective, rng)

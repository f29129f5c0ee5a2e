"""S-TNA (Fang et al. 2020): pick the most influential known users, then optimise the fake ratings
so that, for those users, the targets outscore the items of their current top-K lists:
J = Σ_{u∈S} Σ_t Σ_{i∈L_u} σ((r̂_ut − r̂_ui) / b).

Influence of user u is the first-order change of J (over all known users) caused by one gradient
step on u's known ratings: |Σ_{i∈I_u} e_ui p_u · ∂J/∂q_i| (the Hessian term of the influence
function is dropped); the top ``INFLUENTIAL_SHARE`` of users form S.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles
from attacks.data_poisoning.surrogate_ascent import optimise_profiles

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


def influential_users(knowledge: AttackerKnowledge, targets: torch.Tensor, top_lists: torch.Tensor) -> torch.Tensor:
    surrogate = knowledge.surrogate()
    user_factors = surrogate.user_factors.detach()
    item_factors = surrogate.item_factors.detach().clone().requires_grad_(True)
    users = torch.arange(knowledge.num_users)
    value = _gap_objective(users, top_lists, targets)(user_factors, item_factors)
    (gradient,) = torch.autograd.grad(value, item_factors)
    rated_users = torch.as_tensor(knowledge.users)
    rated_items = torch.as_tensor(knowledge.items)
    errors = torch.as_tensor(knowledge.grid.normalise(knowledge.ratings)) - surrogate.predict(rated_users, rated_items)
    effect = errors * (user_factors[rated_users] * gradient[rated_items]).sum(1)
    influence = torch.zeros(knowledge.num_users).index_add_(0, rated_users, effect.to(torch.float32)).abs()
    count = max(1, int(round(INFLUENTIAL_SHARE * len(np.unique(knowledge.users)))))
    return influence.topk(count).indices


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    surrogate = knowledge.surrogate()
    target_index = torch.as_tensor(targets, dtype=torch.int64)
    scores = surrogate.scores()
    scores[torch.as_tensor(knowledge.users), torch.as_tensor(knowledge.items)] = float("-inf")
    scores[:, target_index] = float("-inf")
    top_lists = scores.topk(TOP_K, dim=1).indices
    chosen = influential_users(knowledge, target_index, top_lists)
    objective = _gap_objective(chosen, top_lists[chosen], target_index)
    return optimise_profiles(knowledge, targets, num_fake, num_fillers, objective, rng)

"""Projected gradient ascent on fake users' ratings through the poisoned surrogate's optimum (PGA, TNA).

Each fake user gets ``CANDIDATE_FACTOR × m'`` random candidate items (their ratings start at the
items' known means) plus the targets at the maximum. The poisoned surrogate is Li et al.'s
alternating-minimisation MF on the known ratings plus the fake ones, solved to its fixed point by
ALS (``fixed_point.FixedPointMF``; the attacker's trained MF is the starting point, and each
ascent step warm-starts from the previous optimum). The attack objective J(P*, Q*) is maximised
over the candidate ratings by normalised gradient steps (the gradient through the optimum, by the
implicit function theorem) projected onto the rating range. Each fake user then keeps its m'
candidates with the largest optimised ratings as fillers, rated with those ratings (snapped to
the grid) — "the first items with the largest ratings are selected as the fake user's filler
items" (TCD paper, §4.1).
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.data_poisoning.fixed_point import FixedPointMF, Objective
from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble, draw_fillers

ITERATIONS = 40
STEP = 0.05  # largest change of a fake user's normalised rating per ascent step
CANDIDATE_FACTOR = 2
ALS_L2 = 1.0  # λ of the poisoned surrogate (normalised ratings)
INITIAL_SWEEPS = 5  # ALS sweeps from the attacker's MF to the first fixed point
WARM_SWEEPS = 1  # ALS sweeps per ascent step, from the previous fixed point


def poisoned_surrogate(knowledge: AttackerKnowledge, num_fake: int, fake_users: torch.Tensor,
                       fake_items: torch.Tensor) -> tuple[FixedPointMF, torch.Tensor]:
    """The ALS surrogate over the known ratings plus fake users ``num_users ..`` rating ``fake_items``,
    and the known ratings' normalised values (the fake ones follow them)."""
    surrogate = knowledge.surrogate()
    users = torch.cat((torch.as_tensor(knowledge.users), fake_users + knowledge.num_users))
    items = torch.cat((torch.as_tensor(knowledge.items), fake_items))
    start = torch.cat((surrogate.user_factors, torch.zeros(num_fake, surrogate.config.dim)))
    known = torch.as_tensor(knowledge.grid.normalise(knowledge.ratings), dtype=torch.float32)
    return FixedPointMF(start, surrogate.item_factors, users, items, ALS_L2), known


def optimise_profiles(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
                      objective: Objective, rng: np.random.Generator) -> FakeProfiles:
    """The fake profiles whose candidate ratings maximise ``objective`` on the poisoned surrogate."""
    grid = knowledge.grid
    allowed = knowledge.num_items - len(np.unique(targets))
    candidates = draw_fillers(rng, num_fake, knowledge.num_items, min(allowed, CANDIDATE_FACTOR * num_fillers), targets)
    mean, _ = knowledge.item_mean_std()
    low = grid.low / grid.high
    ratings = torch.as_tensor(grid.normalise(mean[candidates]), dtype=torch.float32).clamp_(low, 1.0)
    profile_items = np.concatenate((candidates, np.broadcast_to(targets, (num_fake, len(targets)))), axis=1)
    fake_users = torch.arange(num_fake).repeat_interleave(profile_items.shape[1])
    fake_items = torch.as_tensor(profile_items.reshape(-1))
    model, known = poisoned_surrogate(knowledge, num_fake, fake_users, fake_items)
    target_ratings = torch.ones(num_fake, len(targets))
    num_candidates = candidates.shape[1]
    sweeps = INITIAL_SWEEPS
    for _ in range(ITERATIONS):
        values = torch.cat((known, torch.cat((ratings, target_ratings), 1).reshape(-1)))
        model.solve(values, sweeps)
        sweeps = WARM_SWEEPS
        weights = model.objective_weights(objective, knowledge.num_users, values)
        gradient = model.rating_gradient(weights, fake_users + knowledge.num_users, fake_items)
        gradient = gradient.view(num_fake, -1)[:, :num_candidates]
        scale = gradient.abs().amax(1, keepdim=True).clamp_min(1e-12)
        ratings = (ratings + STEP * gradient / scale).clamp_(low, 1.0)
    kept = ratings.topk(num_fillers, dim=1).indices
    fillers = np.take_along_axis(candidates, kept.numpy(), axis=1)
    return assemble(fillers, grid.denormalise(ratings.gather(1, kept)).numpy(), targets, grid)

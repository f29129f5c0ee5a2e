"""Projected gradient ascent on fake users' ratings through an unrolled surrogate (PGA and TNA).

Each fake user gets ``CANDIDATE_FACTOR × m'`` random candidate items (their ratings start at the
items' known means) plus the targets at the maximum. The poisoned surrogate is the attacker's
trained MF continued for ``UNROLL_STEPS`` full-batch gradient steps on the known ratings plus the
fake ones (fake users' factors start from the MF's Xavier initialisation; every row's gradient is
averaged over that row's ratings); the steps are differentiable, so the attack objective
J(P, Q) of the poisoned surrogate is maximised over the candidate ratings by normalised gradient
steps projected onto the rating range. Each fake user then keeps its m' candidates with the
largest optimised ratings as fillers, rated with those ratings (snapped to the grid).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble, draw_fillers

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P of the real users, Q) -> J

ITERATIONS = 40
STEP = 0.05  # largest change of a fake user's normalised rating per ascent step
CANDIDATE_FACTOR = 2
UNROLL_STEPS = 50
UNROLL_LR = 0.5
UNROLL_DECAY = 0.01  # L2 weight of the unrolled steps


class UnrolledSurrogate:
    """The surrogate trained on, in addition, fake users ``0..num_fake-1`` rating ``(fake_users, fake_items)``."""

    def __init__(self, knowledge: AttackerKnowledge, num_fake: int, fake_users: torch.Tensor,
                 fake_items: torch.Tensor) -> None:
        surrogate = knowledge.surrogate()
        self.real_users = surrogate.user_factors.shape[0]
        dim = surrogate.config.dim
        bound = (6.0 / (self.real_users + dim)) ** 0.5  # the MF's Xavier range for user factors
        fake_factors = (torch.rand(num_fake, dim, generator=knowledge.torch_generator(salt=3)) * 2 - 1) * bound
        self.user_factors = torch.cat((surrogate.user_factors, fake_factors))
        self.item_factors = surrogate.item_factors
        self.users = torch.cat((torch.as_tensor(knowledge.users), fake_users + self.real_users))
        self.items = torch.cat((torch.as_tensor(knowledge.items), fake_items))
        self.known = torch.as_tensor(knowledge.grid.normalise(knowledge.ratings), dtype=torch.float32)
        self.user_counts = _ratings_per_row(self.users, len(self.user_factors))
        self.item_counts = _ratings_per_row(self.items, len(self.item_factors))

    def train(self, fake_ratings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P of the real users, Q) after the unrolled steps (differentiable in ``fake_ratings``)."""
        values = torch.cat((self.known, fake_ratings))
        users, items = self.user_factors, self.item_factors
        for _ in range(UNROLL_STEPS):
            p, q = users.index_select(0, self.users), items.index_select(0, self.items)
            error = (torch.linalg.vecdot(p, q) - values).unsqueeze(1)
            grad_users = torch.zeros_like(users).index_add(0, self.users, error * q) / self.user_counts
            grad_items = torch.zeros_like(items).index_add(0, self.items, error * p) / self.item_counts
            users = users - UNROLL_LR * (grad_users + UNROLL_DECAY * users)
            items = items - UNROLL_LR * (grad_items + UNROLL_DECAY * items)
        return users[: self.real_users], items


def _ratings_per_row(rows: torch.Tensor, size: int) -> torch.Tensor:
    """[size, 1] number of ratings of each row (at least 1, so that it can divide)."""
    return torch.bincount(rows, minlength=size).clamp_min_(1).unsqueeze(1).to(torch.float32)


def optimise_profiles(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
                      objective: Objective, rng: np.random.Generator) -> FakeProfiles:
    """The fake profiles whose candidate ratings maximise ``objective`` on the unrolled surrogate."""
    grid = knowledge.grid
    allowed = knowledge.num_items - len(np.unique(targets))
    candidates = draw_fillers(rng, num_fake, knowledge.num_items, min(allowed, CANDIDATE_FACTOR * num_fillers), targets)
    mean, _ = knowledge.item_mean_std()
    low = grid.low / grid.high
    ratings = torch.as_tensor(grid.normalise(mean[candidates]), dtype=torch.float32).clamp_(low, 1.0)
    profile_items = np.concatenate((candidates, np.broadcast_to(targets, (num_fake, len(targets)))), axis=1)
    fake_users = torch.arange(num_fake).repeat_interleave(profile_items.shape[1])
    surrogate = UnrolledSurrogate(knowledge, num_fake, fake_users, torch.as_tensor(profile_items.reshape(-1)))
    target_ratings = torch.ones(num_fake, len(targets))
    for _ in range(ITERATIONS):
        ratings.requires_grad_(True)
        value = objective(*surrogate.train(torch.cat((ratings, target_ratings), 1).reshape(-1)))
        (gradient,) = torch.autograd.grad(value, ratings)
        scale = gradient.abs().amax(1, keepdim=True).clamp_min(1e-12)
        ratings = (ratings.detach() + STEP * gradient / scale).clamp_(low, 1.0)
    kept = ratings.topk(num_fillers, dim=1).indices
    fillers = np.take_along_axis(candidates, kept.numpy(), axis=1)
    return assemble(fillers, grid.denormalise(ratings.gather(1, kept)).numpy(), targets, grid)

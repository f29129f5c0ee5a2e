"""Mini-batch training objectives on (user, item) interactions with sampled negatives.

An objective yields one epoch of batches (a fixed shuffle per seeded generator) and turns a
batch into a scalar loss for any scorer with ``score(users, items)``. Negatives are drawn
uniformly from the items a user has not interacted with (``forbidden`` marks the others).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from recsys.data.dataset import Interactions

Batch = tuple[torch.Tensor, ...]
BATCH_SIZE = 2048  # the paper's batch size (appendix A.1.4)


class Scorer(Protocol):
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor: ...


class Objective(Protocol):
    def batches(self, generator: torch.Generator) -> Iterator[Batch]: ...
    def loss(self, scorer: Scorer, batch: Batch) -> torch.Tensor: ...


def interaction_mask(interactions: Interactions, num_items: int) -> torch.Tensor:
    """Boolean [U, M] mask of every user's items."""
    mask = torch.zeros((interactions.num_users, num_items), dtype=torch.bool)
    mask[torch.from_numpy(interactions.row_ids()), torch.from_numpy(interactions.items)] = True
    return mask


def sample_negatives(forbidden: torch.Tensor, users: torch.Tensor, count: int, generator: torch.Generator,
                     max_rounds: int = 50) -> torch.Tensor:
    """``count`` items per user in ``users`` ([B, count]), uniform over items not ``forbidden[user]``.

    Rejection sampling: forbidden draws are redrawn (a user with nearly every item forbidden
    keeps a forbidden draw after ``max_rounds``; real data never comes close).
    """
    num_items = forbidden.shape[1]
    items = torch.randint(num_items, (len(users), count), generator=generator)
    for _ in range(max_rounds):
        bad = forbidden[users[:, None], items]
        if not bad.any():
            break
        items[bad] = torch.randint(num_items, (int(bad.sum()),), generator=generator)
    return items


def pairwise_bpr(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """L_BPR(r_ip, r_in) = −ln σ(r_ip − r_in) (eq. 4), element-wise."""
    return -F.logsigmoid(positive - negative)


class InteractionObjective:
    """Every observed pair once per epoch, each with ``negatives`` sampled unobserved items.

    ``loss="bpr"``: mean of L_BPR over (positive, negative) pairs; ``loss="logistic"``: binary
    cross-entropy of the observed pair (label 1) and its negatives (label 0), per observed pair.
    """

    LOSSES = ("bpr", "logistic")

    def __init__(self, interactions: Interactions, num_items: int, loss: str = "bpr", negatives: int = 1,
                 batch_size: int = BATCH_SIZE) -> None:
        if loss not in self.LOSSES:
            raise ValueError(f"unknown interaction loss {loss!r}; choose one of {', '.join(self.LOSSES)}")
        if negatives < 1 or batch_size < 1:
            raise ValueError(f"negatives and batch_size must be >= 1, got {negatives} and {batch_size}")
        if interactions.nnz == 0:
            raise ValueError("cannot train on an empty interaction set")
        self.users = torch.from_numpy(interactions.row_ids())
        self.items = torch.from_numpy(np.ascontiguousarray(interactions.items))
        self.forbidden = interaction_mask(interactions, num_items)
        self.loss_name, self.negatives, self.batch_size = loss, negatives, batch_size

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        order = torch.randperm(len(self.users), generator=generator)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            users = self.users[rows]
            yield users, self.items[rows], sample_negatives(self.forbidden, users, self.negatives, generator)

    def loss(self, scorer: Scorer, batch: Batch) -> torch.Tensor:
        users, items, negatives = batch
        positive = scorer.score(users, items)
        negative = scorer.score(users[:, None].expand_as(negatives), negatives)
        if self.loss_name == "bpr":
            return pairwise_bpr(positive[:, None], negative).mean()
        return (F.softplus(-positive) + F.softplus(negative).sum(1)).mean()

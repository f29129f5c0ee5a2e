"""``krum`` and ``multi-krum``: Blanchard et al., NeurIPS 2017, in Flower's variant.

Squared L2 distances (Gram trick), a client's score is the sum of its n−f−2 smallest distances to the
others (at least 1); Krum keeps the best-scoring upload, Multi-Krum the m = n−f best in one shot (no
re-scoring after each pick, unlike PIECK's iterative Multi-Krum). A group needs n ≥ 2f+3 uploads; with
f = 0 Multi-Krum keeps every upload (the plain sum), Krum still keeps only the medoid-like upload.
"""

from __future__ import annotations

import torch

from defenses.federated.base import Combined, GroupedRule, Groups, selected, sort_last_

CHUNK_ENTRIES = 1 << 24  # distance-matrix entries per batch of groups (bounds memory: [G, N, N])


def krum_scores(groups: Groups, f: torch.Tensor) -> torch.Tensor:
    """[G, N] Krum scores (+inf on padding): the sum of each upload's n−f−2 smallest squared distances."""
    size = groups.values.shape[1]
    scores = []
    step = max(1, CHUNK_ENTRIES // (size * size))
    for start in range(0, groups.values.shape[0], step):
        part = groups.subset(slice(start, start + step))
        x, valid = part.values, part.valid
        norms = x.pow(2).sum(2)
        distances = (norms[:, :, None] + norms[:, None, :]).sub_(2 * x @ x.transpose(1, 2)).clamp_(min=0)
        distances.masked_fill_(~valid[:, None, :], float("inf")).diagonal(dim1=1, dim2=2).fill_(float("inf"))
        nearest = sort_last_(distances)  # padding rows are scored +inf below
        neighbours = (part.counts - f[start:start + step] - 2).clamp(min=1)
        take = torch.arange(size, device=x.device)[None, :] < neighbours[:, None]
        scores.append(nearest.masked_fill_(~take[:, None, :], 0).sum(2).masked_fill(~valid, float("inf")))
    return torch.cat(scores)


def multi_krum_choice(groups: Groups, f: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """[G, N] mask of the ``keep`` (per group) lowest-scoring uploads, ties to the lower client id."""
    order = krum_scores(groups, f).argsort(dim=1, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < keep[:, None]


class MultiKrum(GroupedRule):
    """n_g × the mean of the m = n_g − f lowest-scoring uploads of each item row / MLP tensor."""

    name = "multi-krum"

    def keep(self, counts: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return counts - f

    def min_count(self, f: torch.Tensor) -> torch.Tensor:
        return 2 * f + 3

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        return selected(groups, multi_krum_choice(groups, f, self.keep(groups.counts, f)))


class Krum(MultiKrum):
    """n_g × the single lowest-scoring upload of each item row / MLP tensor."""

    name = "krum"

    def keep(self, counts: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(counts)

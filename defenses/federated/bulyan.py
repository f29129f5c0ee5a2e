"""``bulyan``: El Mhamdi et al., ICML 2018, as Flower's ``serverapp.strategy.Bulyan``.

θ = n−2f uploads are selected by one-shot Multi-Krum (squared L2, n−f−2 neighbours; not the iterative Krum
of Flower's legacy ``aggregate_bulyan`` or PIECK), then each coordinate is the mean of the β = θ−2f
selected values closest to the selected uploads' coordinate median (mean of the middle two for even θ).
A group needs n ≥ 4f+3 uploads; with f = 0 it is the plain sum.
"""

from __future__ import annotations

import torch

from defenses.federated.base import Combined, GroupedRule, Groups, coordinate_median
from defenses.federated.krum import multi_krum_choice


def compacted(groups: Groups, chosen: torch.Tensor) -> Groups:
    """The ``chosen`` uploads of every group moved to the front (client-id order kept)."""
    order = (~chosen).to(torch.int8).argsort(dim=1, stable=True)
    values = groups.values.gather(1, order[:, :, None].expand_as(groups.values))
    return Groups(values, chosen.sum(1), groups.malicious.gather(1, order) & chosen.gather(1, order),
                  groups.tensor, groups.rows)


class Bulyan(GroupedRule):
    """n_g × the Bulyan mean of each item row / MLP tensor."""

    name = "bulyan"

    def min_count(self, f: torch.Tensor) -> torch.Tensor:
        return 4 * f + 3

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        chosen = multi_krum_choice(groups, f, groups.counts - 2 * f)
        kept = compacted(groups, chosen)
        distance = (kept.values - coordinate_median(kept)[:, None, :]).abs()
        order = distance.masked_fill(~kept.valid[:, :, None], float("inf")).argsort(1)
        closest = kept.values.gather(1, order)
        beta = kept.counts - 2 * f
        ranks = torch.arange(closest.shape[1], device=closest.device)[None, :, None]
        total = closest.masked_fill(ranks >= beta[:, None, None], 0).sum(1)
        return Combined(total * (groups.counts.to(total.dtype) / beta.to(total.dtype))[:, None], chosen)

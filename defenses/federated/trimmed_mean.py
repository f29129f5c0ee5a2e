"""``trimmed-mean``: Yin et al.'s symmetric coordinate-wise trimmed mean, β of the values cut from each tail."""

from __future__ import annotations

import torch

from defenses.federated.base import CoordinatewiseRule, trimmed_sum


class TrimmedMean(CoordinatewiseRule):
    """Per coordinate, drop the ⌊β·n_g⌋ largest and smallest values and average the rest (× n_g);
    β = ``trim_fraction``; β = 0 is the plain sum."""

    name = "trimmed-mean"

    def combine_sorted(self, ordered: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        trim = torch.floor(counts.double() * self.config.trim_fraction + 1e-9).long()
        return trimmed_sum(ordered, counts, trim)

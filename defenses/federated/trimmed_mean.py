"""``trimmed-mean``: Yin et al.'s symmetric coordinate-wise trimmed mean, β of the values cut from each tail."""

from __future__ import annotations

import torch

from defenses.federated.base import Combined, GroupedRule, Groups, sorted_values, trimmed_sum


class TrimmedMean(GroupedRule):
    """Per coordinate, drop the ⌊β·n_g⌋ largest and smallest values and average the rest (× n_g);
    β = ``trim_fraction``; β = 0 is the plain sum."""

    name = "trimmed-mean"
    coordinatewise = True

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        trim = torch.floor(groups.counts.double() * self.config.trim_fraction + 1e-9).long()
        return Combined(trimmed_sum(sorted_values(groups), groups.counts, trim), groups.valid)

"""``median``: the coordinate-wise median (Yin et al., ICML 2018) of each group, times n_g."""

from __future__ import annotations

import torch

from defenses.federated.base import Combined, GroupedRule, Groups, coordinate_median


class Median(GroupedRule):
    """Coordinate-wise median per item row (over its uploaders) and per MLP tensor; even n: mean of the middle two."""

    name = "median"
    coordinatewise = True

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        return Combined(coordinate_median(groups) * groups.counts[:, None].to(groups.values.dtype), groups.valid)

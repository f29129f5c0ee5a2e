"""``median``: the coordinate-wise median (Yin et al., ICML 2018) of each group, times n_g."""

from __future__ import annotations

import torch

from defenses.federated.base import CoordinatewiseRule, sorted_median


class Median(CoordinatewiseRule):
    """Coordinate-wise median per item row (over its uploaders) and per MLP tensor; even n: mean of the middle two."""

    name = "median"

    def combine_sorted(self, ordered: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return sorted_median(ordered, counts) * counts[:, None].to(ordered.dtype)

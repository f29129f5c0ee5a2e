"""``centered-clip``: centered clipping (Karimireddy, He and Jaggi, ICML 2021), per group.

v ← v + (1/n_g) Σ_i clip(x_i − v, τ) for ``clip_iterations`` iterations, clip(z, τ) = z · min(1, τ/‖z‖₂).
Adapted to federated recommendation (research notes §(a)): each item row starts from that row's previous
robust mean, each MLP tensor (whole vector) from its previous mean, zero before a group's first upload;
these centers persist across rounds (``state_dict``). The step is n_g × v. τ = ``clip_row`` for item rows
(and whole uploads in scope ``vector``), ``clip_mlp`` for MLP tensors, per-round quantiles as in ``norm_bound``.
Cost: ``clip_iterations`` passes over the padded groups, no sort.
"""

from __future__ import annotations

from typing import Any

import torch

from defenses.federated.base import Combined, GroupedRule, Groups
from defenses.federated.norm_bound import clip_bound, clip_bounds, clipped
from federation.config import SimulationConfig
from federation.uploads import ClientUploads
from recsys.models.ncf import NCFSpec
from server.aggregation import Aggregate, RoundInfo


class CenteredClip(GroupedRule):
    """n_g × the centered-clipping mean of each item row / MLP tensor, centered on its last aggregate."""

    name = "centered-clip"

    def __init__(self, config: SimulationConfig, spec: NCFSpec) -> None:
        super().__init__(config, spec)
        self.centers: dict[str, torch.Tensor] = {}  # Groups.tensor → [groups of that tensor, D]

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        self.bounds = clip_bounds(self.config, uploads)
        return super().aggregate(uploads, info)

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        index = slice(None) if groups.rows is None else groups.rows
        store = self.centers.get(groups.tensor)
        if store is None:
            total = 1 if groups.rows is None else self.spec.shapes()[groups.tensor][0]
            store = groups.values.new_zeros((total, groups.values.shape[2]))
        store = self.centers[groups.tensor] = store.to(groups.values)
        center = store[index]
        weight = (groups.valid.to(groups.values.dtype) / groups.counts[:, None].to(groups.values.dtype))[:, :, None]
        bound = clip_bound(groups, *self.bounds)
        for _ in range(self.config.clip_iterations):
            center = center + (clipped(groups.values - center[:, None, :], bound)[0] * weight).sum(1)
        store[index] = center
        return Combined(center * groups.counts[:, None].to(center.dtype), groups.valid)

    def state_dict(self) -> dict[str, Any]:
        return {"centers": {name: value.detach().cpu().clone() for name, value in self.centers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.centers = {name: value.clone() for name, value in state.get("centers", {}).items()}

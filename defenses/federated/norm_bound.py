"""``norm-bound``: norm clipping (Sun et al., "Can you really backdoor federated learning?", 2019) as PIECK
applies it to federated recommendation: every uploaded item row is clipped to L2 ≤ τ_row, every MLP weight
matrix per output neuron and every bias vector as a whole to L2 ≤ τ_mlp, then everything is summed. In
scope ``vector`` each client's whole upload is clipped to τ_row.

τ_row = ``clip_row`` and τ_mlp = ``clip_mlp`` when given (e.g. measured on clean runs with
``experiments.federated_defenses calibrate``); 0 (the default) sets each round's τ to the ``clip_quantile``
quantile (0.9) of the norms uploaded in that round (item rows for τ_row; MLP neurons and biases for τ_mlp),
as adaptive clipping does (Andrew et al., NeurIPS 2021, track a quantile of update norms). Benign gradient
norms shrink by orders of magnitude while training and differ between seeds, so one absolute τ either
clips nearly every benign row early on or nothing late; a few attackers barely move a quantile over
~10⁵ rows.
"""

from __future__ import annotations

import torch

from defenses.federated.base import WHOLE_UPLOAD, Combined, GroupedRule, Groups
from federation.config import SimulationConfig
from federation.uploads import ClientUploads
from server.aggregation import Aggregate, RoundInfo
from recsys.models.ncf import ITEM_EMBEDDING


def _quantile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q)) if len(values) else 0.0


def clip_bounds(config: SimulationConfig, uploads: ClientUploads) -> tuple[float, float]:
    """(τ_row, τ_mlp) for this round: the configured bounds, or the ``clip_quantile`` quantile of the round's
    uploaded item-row norms and MLP neuron / bias norms."""
    row, mlp = config.clip_row, config.clip_mlp
    if row <= 0:
        row = _quantile(uploads.row_values.norm(dim=1), config.clip_quantile)
    if mlp <= 0:
        mlp = _quantile(torch.cat([v.norm(dim=-1).flatten() for v in uploads.dense.values()]), config.clip_quantile)
    return row, mlp


def clip_bound(groups: Groups, row: float, mlp: float) -> float:
    """τ for these groups: τ_row for item rows and whole uploads, τ_mlp for MLP tensors."""
    return mlp if groups.tensor not in (ITEM_EMBEDDING, WHOLE_UPLOAD) else row


def clipped(vectors: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every vector (last axis) scaled to L2 ≤ ``bound``, and which were scaled."""
    norms = vectors.norm(dim=-1, keepdim=True)
    return vectors * (bound / norms.clamp(min=bound)), (norms > bound).squeeze(-1)


class NormBound(GroupedRule):
    """The sum of the clipped uploads of each item row / MLP neuron / bias."""

    name = "norm-bound"
    mlp_grouping = "neuron"

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        self.bounds = clip_bounds(self.config, uploads)
        result = super().aggregate(uploads, info)
        result.report.update(clip_row=self.bounds[0], clip_mlp=self.bounds[1])
        return result

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        values, scaled = clipped(groups.values, clip_bound(groups, *self.bounds))
        scaled &= groups.valid
        self.report["clipped_uploads"] = self.report.get("clipped_uploads", 0) + int(scaled.sum())
        self.report["clipped_malicious_uploads"] = (self.report.get("clipped_malicious_uploads", 0)
                                                   + int((scaled & groups.malicious).sum()))
        return Combined((values * groups.valid[:, :, None].to(values.dtype)).sum(1), groups.valid)

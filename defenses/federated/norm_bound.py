"""``norm-bound``: norm clipping (Sun et al., "Can you really backdoor federated learning?", 2019) as PIECK
applies it to federated recommendation: every uploaded item row is clipped to L2 ≤ τ_row, every MLP weight
matrix per output neuron and every bias vector as a whole to L2 ≤ τ_mlp, then everything is summed. In
scope ``vector`` each client's whole upload is clipped to τ_row.

τ_row = ``clip_row`` and τ_mlp = ``clip_mlp``; 0 selects the defaults below, which are meant to be the 0.9
quantile of benign norms measured on clean runs (research notes §3: τ is set from clean runs only).
"""

from __future__ import annotations

import torch

from defenses.federated.base import WHOLE_UPLOAD, Combined, GroupedRule, Groups
from federation.config import ConfigError, SimulationConfig
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec

DEFAULT_CLIP_ROW = 0.0  # τ_row when --clip-row is 0; 0.0: not measured yet, so the bound must be given
DEFAULT_CLIP_MLP = 0.0  # τ_mlp when --clip-mlp is 0; 0.0: not measured yet, so the bound must be given


def clip_bounds(config: SimulationConfig, rule: str) -> tuple[float, float]:
    """(τ_row, τ_mlp) from the config or the module defaults; ``ConfigError`` when neither gives one."""
    row, mlp = config.clip_row or DEFAULT_CLIP_ROW, config.clip_mlp or DEFAULT_CLIP_MLP
    if row <= 0 or mlp <= 0:
        raise ConfigError(f"{rule} needs --clip-row/--clip-mlp (τ for item rows and MLP tensors; no default is set)")
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

    def __init__(self, config: SimulationConfig, spec: NCFSpec) -> None:
        super().__init__(config, spec)
        self.bounds = clip_bounds(config, self.name)

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        values, scaled = clipped(groups.values, clip_bound(groups, *self.bounds))
        scaled &= groups.valid
        self.report["clipped_uploads"] = self.report.get("clipped_uploads", 0) + int(scaled.sum())
        self.report["clipped_malicious_uploads"] = (self.report.get("clipped_malicious_uploads", 0)
                                                   + int((scaled & groups.malicious).sum()))
        return Combined((values * groups.valid[:, :, None].to(values.dtype)).sum(1), groups.valid)

"""``row-gate``: an uploader-count gate for item rows (fedrec-sim's own defense, research notes §(a); untested
in the literature).

Why: a targeted attack on a cold item makes every malicious client upload that item's row, so its
uploader count n_j jumps far above its history (about 8 benign uploaders a round → 20 with 5% fake users
and one negative), while a benign row's count stays near its mean (roughly Poisson). The server keeps an
exponential moving average m_j of n_j (rate ``EMA_RATE``; a row with no upload counts 0). When
n_j > m_j + gate_threshold·√max(m_j, 1) (a Poisson z-score), row j's step is n_j × its coordinate-wise
trimmed mean with b_j = min(n_j − round(m_j), ⌊(n_j − 1)/2⌋) values cut from each tail; every other row
and the MLP are summed. m_j is updated with n_j capped at that threshold, so a sustained pile-on raises it
only slowly.

Limits: the first round only sets m (nothing is gated), so attackers present from the start make the
attacked count the baseline; attackers that join a row gradually, or spread over many rows, or target a
popular row (large √m_j) stay under the threshold; a gated row's trimmed mean removes extreme values, not
attackers that upload values inside the benign range; scope ``row`` only.
"""

from __future__ import annotations

from typing import Any

import torch

from defenses.federated.base import Combined, GroupedRule, Groups, sorted_values, trimmed_sum
from federation.config import ConfigError, SimulationConfig
from federation.uploads import ClientUploads
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec
from server.aggregation import Aggregate, RoundInfo

EMA_RATE = 0.1  # m_j ← (1 − rate)·m_j + rate·min(n_j, threshold): about 10 rounds of memory


class UploaderCountGate(GroupedRule):
    """Item rows whose uploader count jumps above their running mean get a trimmed mean; the rest is summed."""

    name = "row-gate"

    def __init__(self, config: SimulationConfig, spec: NCFSpec) -> None:
        super().__init__(config, spec)
        if config.aggregation_scope != "row":
            raise ConfigError("row-gate gates item rows by their uploader count: it needs --aggregation-scope row")
        self.mean_count: torch.Tensor | None = None  # float64 [num_items], m_j

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        counts = torch.bincount(uploads.row_items, minlength=self.spec.num_items).double()
        mean = counts if self.mean_count is None else self.mean_count.to(counts.device)
        threshold = mean + self.config.gate_threshold * mean.clamp(min=1).sqrt()
        gated = counts > threshold
        excess = torch.minimum(counts - mean.round(), torch.div(counts - 1, 2, rounding_mode="floor"))
        self._trim = torch.where(gated, excess, 0).long()
        result = super().aggregate(uploads, info)
        self.mean_count = (1 - EMA_RATE) * mean + EMA_RATE * torch.minimum(counts, threshold)
        targets = info.targets.to(gated.device)
        result.report.update(gated_rows=int(gated.sum()), gated_target_rows=int(gated[targets].sum()),
                             trimmed_per_tail=int(self._trim.sum()))
        return result

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        trim = self._trim[groups.rows] if groups.tensor == ITEM_EMBEDDING else torch.zeros_like(groups.counts)
        if not bool(trim.any()):
            return Combined(groups.values.sum(1), groups.valid)
        return Combined(trimmed_sum(sorted_values(groups), groups.counts, trim), groups.valid)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.mean_count is None else {"mean_count": self.mean_count.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean_count = state["mean_count"].clone() if "mean_count" in state else None

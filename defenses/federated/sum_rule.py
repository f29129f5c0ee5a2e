"""``sum``: Θ ← Θ − η Σ_u ∇Θ_u, the federated paper's eq. 6 (no defense; the default)."""

from __future__ import annotations

from federation.uploads import ClientUploads
from server.aggregation import Aggregate, AggregationRule, RoundInfo


class SumRule(AggregationRule):
    """Every valid upload added, clients in id order."""

    name = "sum"

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        return Aggregate(uploads.summed(self.spec.num_items))

"""EB, explicit boosting (the prior-knowledge-free component of PipAttack, Zhang et al. 2022).

A malicious client's local positives are the target items; its loss is the explicit promotion
objective, the mean of −log Υ(p_u, q_i) over the targets, and otherwise it behaves like a benign
client (it updates its own p_u by eq. 5 and uploads ∇Θ of its loss).
"""

from __future__ import annotations

import numpy as np

from attacks.federated.base import MaliciousStrategy
from clients.strategy import ClientUpdate, LocalBatch, StrategyContext, WeightedBCE, bce_step
from recsys.models.ncf import Theta


class ExplicitBoosting(MaliciousStrategy):
    """EB: promote the targets through the client's own embedding (positives only, no negatives)."""

    name = "eb"

    @classmethod
    def fake_profiles(cls, num_clients, targets, num_items, config, rng) -> list[np.ndarray]:
        return [np.asarray(targets, dtype=np.int64) for _ in range(num_clients)]

    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        objective = WeightedBCE.of_batch(batch, keep=batch.labels == 1)
        return bce_step(theta, batch, ctx, objective)

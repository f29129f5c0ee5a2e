"""``eb-promote``: explicit boosting with the promotion loss alone. The fake client's positives are the
targets; its loss is the mean of −log Υ(p_u, q_i) over the targets (no negatives); it updates its own p_u
(eq. 5) and uploads ∇Θ of that loss. Stronger than the paper's EB (``eb``), which also trains on negatives.
"""

from __future__ import annotations

from attacks.federated.base import MaliciousStrategy
from attacks.federated.explicit_boosting import ExplicitBoosting
from clients.strategy import ClientUpdate, LocalBatch, StrategyContext, WeightedBCE, bce_step
from recsys.models.ncf import Theta


class PromotionBoosting(MaliciousStrategy):
    """EB without negatives: promote the targets through the client's own embedding."""

    name = "eb-promote"
    fake_profiles = ExplicitBoosting.fake_profiles

    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        return bce_step(theta, batch, ctx, WeightedBCE.of_batch(batch, keep=batch.labels == 1))

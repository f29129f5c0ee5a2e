"""A-ra, attack with random approximation (section 3.1, eq. 7).

Each selected malicious client draws n approximated user vectors p̂_j ~ N(0, σ²) and uploads
∇Θ of L̃(Θ) = (1/n) Σ_{i ∈ targets} Σ_j −log Υ(p̂_j, q_i), i.e. BCE against the maximum score 1.
"""

from __future__ import annotations

import torch

from attacks.federated.base import MaliciousStrategy, approximated_users, promotion_upload
from clients.strategy import ClientUpdate, LocalBatch, StrategyContext, WeightedBCE
from recsys.models.ncf import Theta


class RandomApproximation(MaliciousStrategy):
    """A-ra: poisoned gradients for Gaussian approximations of benign users."""

    name = "a-ra"

    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        n, targets, clients = ctx.config.approx_users, ctx.targets.to(batch.items.device), len(batch.client_ids)
        rows = approximated_users(batch, n, ctx)
        owner = torch.arange(clients * n, device=rows.device).repeat_interleave(len(targets))
        items = targets.repeat(clients * n)
        objective = WeightedBCE(rows, owner, items, torch.ones_like(items, dtype=rows.dtype),
                                torch.full_like(items, 1.0 / n, dtype=rows.dtype),
                                torch.arange(clients, device=rows.device).repeat_interleave(n))
        return promotion_upload(theta, objective, batch, ctx)

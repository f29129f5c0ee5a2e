"""What every malicious federated strategy shares: it is left out of the metrics and its uploads are
scaled by α (the paper's trade-off between validity and effectiveness, ``--attack-scale``)."""

from __future__ import annotations

from abc import abstractmethod

import torch

from clients.strategy import (ClientStrategy, ClientUpdate, LocalBatch, StrategyContext, WeightedBCE, bce_step,
                              client_uploads)
from recsys.models.ncf import Theta


class MaliciousStrategy(ClientStrategy):
    """A malicious client: ``craft`` computes the unscaled uploads; ``train`` multiplies them by α."""

    benign = False

    @abstractmethod
    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        """The batch's poisoned uploads before scaling, one per client (``ClientUpdate``)."""

    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        update = self.craft(theta, batch, ctx)
        return ClientUpdate(update.uploads.scaled(ctx.config.attack_scale), update.embeddings)


class ProfileClient(MaliciousStrategy):
    """A fake user that trains exactly like a benign client (BCE on its profile and its r sampled negatives,
    its own p_u updated by eq. 5); the attack is the profile, given by ``fake_profiles``."""

    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        return bce_step(theta, batch, ctx)


def approximated_users(batch: LocalBatch, per_client: int, ctx: StrategyContext) -> torch.Tensor:
    """``per_client`` approximated benign user vectors p̂ ~ N(0, σ²) for every batch client (the paper's
    Step 2), rows grouped by client; each client draws from its own generator (``ctx.client_generator``)."""
    like = batch.embeddings
    draws = [torch.randn((per_client, ctx.spec.dim), generator=ctx.client_generator(c), dtype=like.dtype)
             for c in batch.client_ids]
    stacked = torch.cat(draws) if draws else torch.zeros((0, ctx.spec.dim), dtype=like.dtype)
    return (stacked * ctx.config.approx_sigma).to(like.device)


def promotion_upload(theta: Theta, objective: WeightedBCE, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
    """Upload ∇Θ of L̃ (eqs. 7 and 10) for every client; the clients' own embeddings stay as they are."""
    grads = objective.per_client(theta, ctx.spec.num_linear, len(batch.client_ids))
    return ClientUpdate(client_uploads(batch, grads), batch.embeddings)

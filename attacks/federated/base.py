"""What every malicious federated strategy shares: it is left out of the metrics and its uploads are
scaled by α (the paper's trade-off between validity and effectiveness, ``--attack-scale``)."""

from __future__ import annotations

from abc import abstractmethod

import torch

from clients.strategy import ClientStrategy, ClientUpdate, LocalBatch, StrategyContext, WeightedBCE
from recsys.models.ncf import Theta


class MaliciousStrategy(ClientStrategy):
    """A malicious client: ``craft`` computes the unscaled upload; ``train`` multiplies it by α."""

    benign = False

    @abstractmethod
    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        """The batch's poisoned upload before scaling (norms of every client measured)."""

    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        update = self.craft(theta, batch, ctx)
        alpha = ctx.config.attack_scale
        return ClientUpdate({name: alpha * grad for name, grad in update.grads.items()}, update.embeddings,
                            update.loss_sum, update.num_clients, alpha * update.upload_norms)


def approximated_users(num: int, ctx: StrategyContext, like: torch.Tensor) -> torch.Tensor:
    """``num`` approximated benign user vectors p̂ ~ N(0, σ²) (the paper's Step 2)."""
    draws = torch.randn((num, ctx.spec.dim), generator=ctx.generator, dtype=like.dtype)
    return (draws * ctx.config.approx_sigma).to(like.device)


def promotion_upload(theta: Theta, objective: WeightedBCE, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
    """Upload ∇Θ of L̃ (eqs. 7 and 10) for every client; the clients' own embeddings stay as they are."""
    loss, grads, _ = objective.gradients(theta, ctx.spec.num_linear)
    norms = objective.upload_norms(theta, ctx.spec.num_linear, range(len(batch.client_ids)))
    return ClientUpdate(grads, batch.embeddings, float(loss), len(batch.client_ids), norms)

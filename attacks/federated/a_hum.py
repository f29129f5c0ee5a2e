"""A-hum, attack with hard user mining (section 3.2, eqs. 8–10).

For each target item i, n vectors p̂_j^i ~ N(0, σ²) are moved β times by gradient descent with step ξ
on l_i(p) = −log(1 − Υ(p, q_i)) (eq. 9), which finds users who score i low (hard users); the client
then uploads ∇Θ of L̃ = (1/n) Σ_i Σ_j −log Υ(p̂_j^i, q_i) (eq. 10).
"""

from __future__ import annotations

import torch

from attacks.federated.base import MaliciousStrategy, approximated_users, promotion_upload
from clients.strategy import ClientUpdate, LocalBatch, StrategyContext, WeightedBCE
from recsys import native
from recsys.models.ncf import Theta, item_first_layer, paired_row_grad


def mine_hard_users(theta: Theta, rows: torch.Tensor, items: torch.Tensor, step: float, iterations: int,
                    num_linear: int) -> torch.Tensor:
    """β steps of p ← p − ξ ∂l_i/∂p with l_i(p) = −log(1 − Υ(p, q_i)) (BCE with label 0), row r paired with item
    ``items[r]``."""
    item_part = item_first_layer(theta, items)
    if native.supports(rows, *theta.values()):  # one C call instead of iterations x a dozen tiny torch ops
        layers = [(theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"]) for k in range(1, num_linear)]
        return native.mine_rows(rows, item_part, theta["mlp.0.weight"][:, :rows.shape[1]], layers, step, iterations)
    labels = torch.zeros(len(rows), dtype=rows.dtype, device=rows.device)
    for _ in range(iterations):
        rows = rows - step * paired_row_grad(theta, rows, item_part, labels, num_linear)
    return rows


class HardUserMining(MaliciousStrategy):
    """A-hum: poisoned gradients for mined hard users of every target item."""

    name = "a-hum"

    def craft(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        config, targets, clients = ctx.config, ctx.targets.to(batch.items.device), len(batch.client_ids)
        n, per_client = config.approx_users, config.approx_users * len(targets)
        # Rows ordered (client, target, j): row r approximates a hard user of targets[(r // n) % T].
        items = targets.repeat_interleave(n).repeat(clients)
        initial = approximated_users(batch, per_client, ctx)
        rows = mine_hard_users(theta, initial, items, config.mining_lr, config.mining_steps, ctx.spec.num_linear)
        owner = torch.arange(len(rows), device=rows.device)
        objective = WeightedBCE(rows, owner, items, torch.ones_like(items, dtype=rows.dtype),
                                torch.full_like(items, 1.0 / n, dtype=rows.dtype),
                                torch.arange(clients, device=rows.device).repeat_interleave(per_client))
        return promotion_upload(theta, objective, batch, ctx)

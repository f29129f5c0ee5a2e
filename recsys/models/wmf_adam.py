"""WMF trained by Adam on full user rows: RevAdv's WRMF victim (``WeightedMF-sgd`` in its
``evaluate_attack_args.py``: d 128, 50 epochs, Adam lr 1e-2 with L2 1e-5 as weight decay, batches
of 2,048 user rows, ``weight_alpha`` 20), the same model and training as its WMF surrogate.

Loss of a batch B of users, summed (RevAdv's ``mse_loss(...).sum()``): Σ_{u∈B} Σ_i w_ui (y_ui − p_uᵀq_i)²,
w_ui = α on a click and 1 elsewhere, every item of the row included, computed from the clicks and
Σ_i s_ui² = p_uᵀ(QᵀQ)p_u without the dense [B, M] rows. Embeddings start at N(0, 0.1²), as there.
"""

from __future__ import annotations

import torch

from recsys.data.dataset import Interactions
from recsys.models.base import RankingModel
from recsys.models.wrmf import distinct_pairs, weighted_square_loss

INIT_STD = 0.1  # RevAdv's WeightedMF initialisation


class AdamWMF(RankingModel):
    """p_uᵀq_i scored; trained by Adam on ``row_loss`` over batches of users (see the module doc)."""

    native_loss = "rows"
    alpha = 20.0  # the weight of a click (RevAdv's weight_alpha; WRMF's confidence would be 1 + α)

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator) -> None:
        super().__init__(num_users, num_items, dim, generator)
        with torch.no_grad():
            self.user_emb.copy_(INIT_STD * torch.randn(num_users, dim, generator=generator))
            self.item_emb.copy_(INIT_STD * torch.randn(num_items, dim, generator=generator))

    def bind(self, train: Interactions) -> None:
        super().bind(train)
        users, items = distinct_pairs(train, self.num_items)  # sorted by user: a CSR layout
        counts = torch.bincount(torch.from_numpy(users), minlength=self.num_users)
        self.indptr = torch.cat((counts.new_zeros(1), counts.cumsum(0))).to(self.device)
        self.items = torch.from_numpy(items).to(self.device)

    def row_loss(self, users: torch.Tensor) -> torch.Tensor:
        """The weighted squared error of the full rows of ``users`` (distinct ids), summed."""
        if not hasattr(self, "indptr"):
            raise RuntimeError("AdamWMF.row_loss needs bind(train) first")
        starts = self.indptr[users]
        lengths = self.indptr[users + 1] - starts
        rows = torch.repeat_interleave(torch.arange(len(users), device=self.device), lengths)
        first = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)  # each click's row start in the batch
        positions = starts[rows] + torch.arange(len(rows), device=self.device) - first
        return weighted_square_loss(self.user_emb[users], self.item_emb, rows, self.items[positions], self.alpha)

"""LightGCN (He et al. SIGIR'20): embeddings propagated over the normalised user–item graph,
E^(k+1) = Â E^(k), final vectors = mean over k = 0..L; trained with BPR plus L2 on the batch's
ego embeddings (λ = 1e-4). Before ``bind`` the graph is empty (scores are then (p·q)/(L+1)²)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recsys.data.dataset import Interactions
from recsys.models.base import RankingModel
from recsys.models.graph import bipartite_edges, info_nce, normalised_adjacency, propagate


class LightGCN(RankingModel):
    native_loss = "model"
    layers = 3
    reg = 1e-4
    include_ego = True  # whether the layer mean includes E^(0) (SimGCL's code leaves it out)
    ssl_weight = 0.0  # weight of the contrastive term between two ``views`` (SGL, SimGCL)
    temperature = 0.2  # InfoNCE τ of the contrastive term

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator) -> None:
        super().__init__(num_users, num_items, dim, generator)
        empty = torch.zeros(0, dtype=torch.long)
        self.edges = (empty, empty)
        self.adjacency = normalised_adjacency(empty, empty, num_users, num_items, self.user_emb.dtype)

    def bind(self, train: Interactions) -> None:
        super().bind(train)
        self.edges = tuple(ids.to(self.device) for ids in bipartite_edges(train, self.num_items))
        self.adjacency = normalised_adjacency(*self.edges, self.num_users, self.num_items, self.user_emb.dtype)

    def propagated(self, adjacency: torch.Tensor | None = None, noise: float = 0.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) final vectors over ``adjacency`` (default: the bound graph)."""
        ego = torch.cat((self.user_emb, self.item_emb))
        final = propagate(self.adjacency if adjacency is None else adjacency, ego, self.layers,
                          self.include_ego, noise, generator)
        return final[: self.num_users], final[self.num_users :]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagated()

    def recommendation_loss(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor, users: torch.Tensor,
                            positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """BPR over (user, positive, each negative) + λ/2·(‖p_u‖² + ‖q_pos‖² + ‖q_neg‖²) per batch row."""
        u = user_vecs[users]
        positive = (u * item_vecs[positives]).sum(-1)
        negative = (u[:, None, :] * item_vecs[negatives]).sum(-1)
        bpr = -F.logsigmoid(positive[:, None] - negative).mean()
        l2 = (self.user_emb[users].pow(2).sum() + self.item_emb[positives].pow(2).sum()
              + self.item_emb[negatives].pow(2).sum() / negatives.shape[1])
        return bpr + self.reg * l2 / (2 * len(users))

    def views(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Two augmented (users, items) views for the contrastive term (SGL, SimGCL)."""
        raise NotImplementedError

    def training_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """BPR (+ L2), plus ``ssl_weight`` × InfoNCE of the two views over the batch's distinct
        users and distinct positive items."""
        loss = self.recommendation_loss(*self.propagated(), users, positives, negatives)
        if not self.ssl_weight:
            return loss
        (u1, i1), (u2, i2) = self.views()
        batch_users, batch_items = torch.unique(users), torch.unique(positives)
        contrast = (info_nce(u1[batch_users], u2[batch_users], self.temperature)
                    + info_nce(i1[batch_items], i2[batch_items], self.temperature))
        return loss + self.ssl_weight * contrast

"""The attention fusion of clone and auxiliary item embeddings (eqs. 5–8).

α = wᵀ ReLU(p_i ⊙ q_j^c) + b, β = wᵀ ReLU(p_i ⊙ q_j^a) + b; (α', β') = softmax(α, β);
q_j^f = α' q_j^c + β' q_j^a; the clone scores (p_i, q_j^f) with its own scorer (for MF, eq. 8:
r_ij = p_i · q_j^f). The auxiliary item embeddings q^a are frozen.
"""

from __future__ import annotations

import torch

from recsys.models.ranking import RankingModel


class AttentionFusion(torch.nn.Module):
    """The single-layer attention network (w, b) of eq. 5 and the convex combination of eqs. 6–7."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = dim ** -0.5  # torch.nn.Linear's default initialisation range
        self.w = torch.nn.Parameter((torch.rand(dim, generator=generator) * 2 - 1) * bound)
        self.b = torch.nn.Parameter(torch.zeros(()))

    def weights(self, user_vecs: torch.Tensor, clone_items: torch.Tensor,
                aux_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α', β') for aligned rows [..., d]; they are positive and sum to 1."""
        alpha = torch.relu(user_vecs * clone_items) @ self.w + self.b
        beta = torch.relu(user_vecs * aux_items) @ self.w + self.b
        normalised = torch.softmax(torch.stack((alpha, beta)), dim=0)
        return normalised[0], normalised[1]

    def forward(self, user_vecs: torch.Tensor, clone_items: torch.Tensor, aux_items: torch.Tensor) -> torch.Tensor:
        """q^f = α' q^c + β' q^a (eq. 7)."""
        alpha, beta = self.weights(user_vecs, clone_items, aux_items)
        return alpha[..., None] * clone_items + beta[..., None] * aux_items


class FusedClone(torch.nn.Module):
    """A clone model whose item embeddings are fused with frozen auxiliary ones (PTA, PTAQ)."""

    def __init__(self, model: RankingModel, aux_items: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        if aux_items.shape != model.item_emb.shape:
            raise ValueError(f"auxiliary item embeddings {tuple(aux_items.shape)} do not match the clone's "
                             f"{tuple(model.item_emb.shape)}: both models need the same item set and dimension")
        self.model = model
        self.register_buffer("aux_items", aux_items.detach().clone())
        self.fusion = AttentionFusion(model.dim, generator)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_vecs = self.model.user_emb[users]
        fused = self.fusion(user_vecs, self.model.item_emb[items], self.aux_items[items])
        return self.model.pair_scores(users, items, user_vecs, fused)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """Scores of every item ([U, M]); the fused embeddings depend on the user, so this
        builds [chunk, M, d] tensors ``chunk`` users at a time."""
        items = torch.arange(self.aux_items.shape[0])
        rows = [self.score(part[:, None].expand(-1, len(items)), items[None, :].expand(len(part), -1))
                for part in users.split(chunk)]
        return torch.cat(rows)

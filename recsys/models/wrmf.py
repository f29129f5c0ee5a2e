"""WRMF (Hu, Koren & Volinsky 2008): weighted matrix factorisation for implicit feedback,
trained by alternating least squares.

Confidence c_ui = 1 + α·r_ui, preference p_ui = 1[r_ui > 0]; minimise
Σ_ui c_ui (p_ui − x_uᵀy_i)² + λ(‖X‖² + ‖Y‖²). One sweep solves every user, then every item:
x_u = (YᵀY + α·Σ_{i∈u} y_i y_iᵀ + λI)⁻¹ (1 + α)·Σ_{i∈u} y_i (and the mirror for items).

Batched, with no per-user loop: rows sorted by length are cut into buckets of 256 and padded to
the bucket's longest row; a bucket's Gram sums Σ_{i∈u} y_i y_iᵀ are one batched matrix product of
the gathered [B, L, d] vectors and its d×d systems are solved together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.dataset import Interactions
from recsys.models.base import RankingModel

ROWS_PER_BUCKET = 256  # rows whose d×d systems are built and solved at once


@dataclass(frozen=True)
class Bucket:
    """Rows of similar length: their ids [B] and their items [B, L], padded to the longest row with
    the id one past the last column (a zero vector in ``als_solve``)."""

    rows: torch.Tensor
    items: torch.Tensor


def buckets(users: np.ndarray, items: np.ndarray, num_rows: int, num_cols: int,
            device: torch.device | str = "cpu") -> list[Bucket]:
    """The (distinct) pairs grouped by row, rows sorted by length and cut into buckets of
    ``ROWS_PER_BUCKET``, each padded to its longest row (little padding, since lengths are sorted)."""
    lists = Interactions.from_pairs(users, items, num_rows)
    lengths = lists.lengths()
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, num_rows, ROWS_PER_BUCKET):
        rows = order[start : start + ROWS_PER_BUCKET]
        width = max(int(lengths[rows].max()), 1)
        offsets = np.arange(width)
        valid = offsets[None, :] < lengths[rows][:, None]
        index = np.where(valid, lists.indptr[rows][:, None] + offsets[None, :], 0)
        padded = np.where(valid, lists.items[index] if lists.nnz else 0, num_cols)
        out.append(Bucket(torch.from_numpy(rows).to(device), torch.from_numpy(padded).to(device)))
    return out


def als_solve(groups: list[Bucket], fixed: torch.Tensor, alpha: float, reg: float, num_rows: int,
              rhs: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares rows x = (FᵀF + α·Σ_{j∈row} f_j f_jᵀ + λI)⁻¹ (1 + α)·Σ_{j∈row} f_j given the fixed side F;
    with ``rhs`` [num_rows, d], the same systems solved for those right-hand sides instead."""
    dim = fixed.shape[1]
    gram = fixed.T @ fixed + reg * torch.eye(dim, dtype=fixed.dtype, device=fixed.device)
    padded = torch.cat((fixed, fixed.new_zeros((1, dim))))  # the padding id reads a zero vector
    out = fixed.new_zeros((num_rows, dim))
    for group in groups:
        vectors = padded.index_select(0, group.items.reshape(-1)).view(*group.items.shape, dim)  # [B, L, d]
        factor = torch.linalg.cholesky(gram + alpha * vectors.transpose(1, 2) @ vectors)  # SPD systems
        right = (1.0 + alpha) * vectors.sum(1) if rhs is None else rhs[group.rows]
        out[group.rows] = torch.cholesky_solve(right[..., None], factor)[..., 0]
    return out


def distinct_pairs(train: Interactions, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (user, item) pairs of ``train``, sorted by user, then item (a repeated click counts once)."""
    pairs = np.unique(train.row_ids() * num_items + train.items)
    return pairs // num_items, pairs % num_items


def weighted_square_loss(user_vecs: torch.Tensor, item_vecs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                         positive_weight: float) -> torch.Tensor:
    """Σ_u Σ_i w_ui (p_ui − x_uᵀy_i)² over every (user, item) of ``user_vecs`` × ``item_vecs``, with p_ui = 1 and
    w_ui = ``positive_weight`` on the observed pairs (``rows`` index ``user_vecs``, ``cols`` index ``item_vecs``)
    and p_ui = 0, w_ui = 1 elsewhere, without forming the dense matrix: Σ_all s² = tr(XᵀX·YᵀY), plus the
    corrections on the observed entries."""
    observed = (user_vecs[rows] * item_vecs[cols]).sum(1)
    every = torch.sum((user_vecs.T @ user_vecs) * (item_vecs.T @ item_vecs))
    return every - (observed**2).sum() + positive_weight * ((1.0 - observed) ** 2).sum()


class WRMF(RankingModel):
    """x_uᵀ y_i scored; trained by ``als_sweep`` on the bound interactions (α = 20, λ = 0.05 as RevAdv's ALS)."""

    native_loss = "als"
    alpha = 20.0
    reg = 0.05

    def bind(self, train: Interactions) -> None:
        super().bind(train)
        users, items = distinct_pairs(train, self.num_items)
        self.pairs = (torch.from_numpy(users).to(self.device), torch.from_numpy(items).to(self.device))
        self.by_user = buckets(users, items, self.num_users, self.num_items, self.device)
        self.by_item = buckets(items, users, self.num_items, self.num_users, self.device)

    @torch.no_grad()
    def als_sweep(self) -> dict[str, float]:
        """Solve every user given the items, then every item given the users; return the loss."""
        if not hasattr(self, "by_user"):
            raise RuntimeError("WRMF.als_sweep needs bind(train) first")
        self.user_emb.copy_(als_solve(self.by_user, self.item_emb, self.alpha, self.reg, self.num_users))
        self.item_emb.copy_(als_solve(self.by_item, self.user_emb, self.alpha, self.reg, self.num_items))
        return {"train/loss": float(self.objective())}

    @torch.no_grad()
    def objective(self) -> torch.Tensor:
        """Σ c_ui (p_ui − x_uᵀy_i)² + λ(‖X‖² + ‖Y‖²), c_ui = 1 + α on a click, without the dense matrix."""
        x, y = self.user_emb, self.item_emb
        fit = weighted_square_loss(x, y, *self.pairs, 1.0 + self.alpha)
        return fit + self.reg * (x.pow(2).sum() + y.pow(2).sum())

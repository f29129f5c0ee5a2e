"""WRMF (Hu, Koren & Volinsky 2008): weighted matrix factorisation for implicit feedback,
trained by alternating least squares.

Confidence c_ui = 1 + α·r_ui, preference p_ui = 1[r_ui > 0]; minimise
Σ_ui c_ui (p_ui − x_uᵀy_i)² + λ(‖X‖² + ‖Y‖²). One sweep solves every user, then every item:
x_u = (YᵀY + α·Σ_{i∈u} y_i y_iᵀ + λI)⁻¹ (1 + α)·Σ_{i∈u} y_i (and the mirror for items).

Batched, with no per-user loop: the per-row Gram sums Σ_{i∈u} y_i y_iᵀ of a block of rows are one
sparse × dense product R_block · (y_i ⊗ y_i) ([rows, d²]), and the d×d systems are solved together.
"""

from __future__ import annotations

import torch

from recsys.data.dataset import Interactions
from recsys.models.base import RankingModel

ROWS_PER_BLOCK = 2048  # rows whose d×d systems are built and solved at once (memory: rows·d² floats)


def row_blocks(train: Interactions, num_cols: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """The binary interaction matrix (duplicates counted once) as sparse COO blocks of
    ``ROWS_PER_BLOCK`` rows each ([rows, num_cols])."""
    blocks = []
    for start in range(0, train.num_users, ROWS_PER_BLOCK):
        stop = min(start + ROWS_PER_BLOCK, train.num_users)
        lo, hi = train.indptr[start], train.indptr[stop]
        rows = torch.from_numpy(train.row_ids()[lo:hi] - start)
        cols = torch.from_numpy(train.items[lo:hi])
        coo = torch.sparse_coo_tensor(torch.stack((rows, cols)), torch.ones(len(rows), dtype=dtype),
                                      (stop - start, num_cols), check_invariants=False).coalesce()
        blocks.append(torch.sparse_coo_tensor(coo.indices(), torch.ones_like(coo.values()), coo.shape,
                                              check_invariants=False, is_coalesced=True))
    return blocks


def als_solve(blocks: list[torch.Tensor], fixed: torch.Tensor, alpha: float, reg: float) -> torch.Tensor:
    """Least-squares rows for the binary row ``blocks`` (sparse [R_b, C]) given the fixed side [C, d]."""
    dim = fixed.shape[1]
    gram = fixed.T @ fixed + reg * torch.eye(dim, dtype=fixed.dtype)
    outer = (fixed[:, :, None] * fixed[:, None, :]).reshape(len(fixed), dim * dim)  # y_i ⊗ y_i
    solved = [torch.linalg.solve(gram + alpha * torch.sparse.mm(block, outer).reshape(-1, dim, dim),
                                 (1.0 + alpha) * torch.sparse.mm(block, fixed)) for block in blocks]
    return torch.cat(solved) if solved else fixed.new_zeros((0, dim))


def transpose(train: Interactions, num_items: int) -> Interactions:
    """Item-major lists: row i holds the users of item i."""
    return Interactions.from_pairs(train.items, train.row_ids(), num_items)


class WRMF(RankingModel):
    """x_uᵀ y_i scored; trained by ``als_sweep`` on the bound interactions (α = 20, λ = 0.05 as RevAdv's ALS)."""

    native_loss = "als"
    alpha = 20.0
    reg = 0.05

    def bind(self, train: Interactions) -> None:
        super().bind(train)
        self.by_user = row_blocks(train, self.num_items, self.user_emb.dtype)
        self.by_item = row_blocks(transpose(train, self.num_items), self.num_users, self.user_emb.dtype)

    @torch.no_grad()
    def als_sweep(self) -> dict[str, float]:
        """Solve every user given the items, then every item given the users; return the loss."""
        if not hasattr(self, "by_user"):
            raise RuntimeError("WRMF.als_sweep needs bind(train) first")
        self.user_emb.copy_(als_solve(self.by_user, self.item_emb, self.alpha, self.reg))
        self.item_emb.copy_(als_solve(self.by_item, self.user_emb, self.alpha, self.reg))
        return {"train/loss": float(self.objective())}

    @torch.no_grad()
    def objective(self) -> torch.Tensor:
        """Σ c_ui (p_ui − x_uᵀy_i)² + λ(‖X‖² + ‖Y‖²), without forming the dense matrix:
        Σ_all s² = tr(XᵀX·YᵀY), plus the corrections on the observed entries."""
        x, y = self.user_emb, self.item_emb
        rows, cols = torch.cat([block.indices() + torch.tensor([[k * ROWS_PER_BLOCK], [0]])
                                for k, block in enumerate(self.by_user)], dim=1)  # distinct observed pairs
        observed = (x[rows] * y[cols]).sum(1)
        every = torch.sum((x.T @ x) * (y.T @ y))
        fit = every - (observed**2).sum() + (1.0 + self.alpha) * ((1.0 - observed) ** 2).sum()
        return fit + self.reg * (x.pow(2).sum() + y.pow(2).sum())

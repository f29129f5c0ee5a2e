"""The poisoned surrogate at its optimum, and gradients through that optimum (PGA and S-TNA).

The surrogate is Li et al.'s alternating-minimisation MF
    L(P, Q; r) = Σ_{(u,i)∈Ω} (p_u·q_i − r_ui)² + λ (‖P‖² + ‖Q‖²)
over the known ratings plus the fake users' ratings r̃, solved to its fixed point by alternating
least squares (each row's exact ridge solution in turn). The gradient of an attack objective
J(P*, Q*) with respect to the fake ratings follows from the first-order (KKT) condition
∇_θ L(θ*, r̃) = 0 by the implicit function theorem:
    dJ/dr̃_ui = −(∂∇_θL/∂r̃_ui)ᵀ H⁻¹ ∇_θJ = 2 (w_{p_u}·q_i + p_u·w_{q_i}),   w = H⁻¹ ∇_θJ,
H the Hessian of L at θ* (Hessian-vector products by double back-propagation, torch.autograd),
H⁻¹∇_θJ by conjugate gradients. The same w gives the influence function of S-TNA: removing the
ratings z of a user changes J by ≈ w · ∇_θ ℓ_z (Koh & Liang), which is how S-TNA ranks users.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (P of the real users, Q) -> J

CG_ITERATIONS = 50
CG_DAMPING = 1e-3  # added to H's diagonal: H has a null space (rotations of P and Q)


class FixedPointMF:
    """The MF of ``num_users`` × ``num_items`` rows trained on (``users``, ``items``, values) to its optimum."""

    def __init__(self, user_factors: torch.Tensor, item_factors: torch.Tensor, users: torch.Tensor,
                 items: torch.Tensor, l2: float) -> None:
        if l2 <= 0:
            raise ValueError(f"the ALS ridge weight must be > 0, got {l2}")
        self.user_factors, self.item_factors = user_factors.detach().clone(), item_factors.detach().clone()
        self.users, self.items, self.l2 = users, items, l2

    def _ridge(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, other: torch.Tensor,
               count: int) -> torch.Tensor:
        """For each row: argmin_x Σ (x·other_c − v)² + λ‖x‖² over its (col, value) pairs."""
        dim = other.shape[1]
        pattern = torch.sparse_coo_tensor(torch.stack((rows, cols)), torch.ones(len(rows)), (count, len(other)),
                                          check_invariants=False).coalesce()
        outer = (other.unsqueeze(2) * other.unsqueeze(1)).reshape(len(other), dim * dim)
        gram = torch.sparse.mm(pattern, outer).view(count, dim, dim)  # Σ_c o_c o_cᵀ per row
        gram.diagonal(dim1=1, dim2=2).add_(self.l2)
        rhs = torch.zeros(count, dim).index_add_(0, rows, other[cols] * values.unsqueeze(1))
        return torch.cholesky_solve(rhs.unsqueeze(2), torch.linalg.cholesky(gram)).squeeze(2)

    @torch.no_grad()
    def solve(self, values: torch.Tensor, sweeps: int) -> None:
        """``sweeps`` ALS sweeps (users, then items) on ``values``, from the current factors."""
        for _ in range(sweeps):
            self.user_factors = self._ridge(self.users, self.items, values, self.item_factors,
                                            len(self.user_factors))
            self.item_factors = self._ridge(self.items, self.users, values, self.user_factors,
                                            len(self.item_factors))

    def loss(self, user_factors: torch.Tensor, item_factors: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        error = torch.linalg.vecdot(user_factors[self.users], item_factors[self.items]) - values
        return error.square().sum() + self.l2 * (user_factors.square().sum() + item_factors.square().sum())

    def inverse_hessian_product(self, values: torch.Tensor, grad_users: torch.Tensor,
                                grad_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(H + damping)⁻¹ (grad_users, grad_items) at the current factors, by conjugate gradients."""
        p = self.user_factors.clone().requires_grad_(True)
        q = self.item_factors.clone().requires_grad_(True)
        gradient = torch.autograd.grad(self.loss(p, q, values), (p, q), create_graph=True)

        def hvp(vector: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            product = torch.autograd.grad(gradient, (p, q), vector, retain_graph=True)
            return tuple(h + CG_DAMPING * v for h, v in zip(product, vector))

        def dot(a, b) -> torch.Tensor:
            return sum((x * y).sum() for x, y in zip(a, b))

        solution = (torch.zeros_like(grad_users), torch.zeros_like(grad_items))
        residual = (grad_users.clone(), grad_items.clone())
        direction = residual
        norm = dot(residual, residual)
        target = 1e-8 * norm
        for _ in range(CG_ITERATIONS):
            product = hvp(direction)
            curvature = dot(direction, product)
            if curvature <= 0 or norm <= target:
                break
            alpha = norm / curvature
            solution = tuple(x + alpha * d for x, d in zip(solution, direction))
            residual = tuple(r - alpha * h for r, h in zip(residual, product))
            new_norm = dot(residual, residual)
            direction = tuple(r + (new_norm / norm) * d for r, d in zip(residual, direction))
            norm = new_norm
        return tuple(s.detach() for s in solution)

    def objective_weights(self, objective: Objective, real_users: int,
                          values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w = H⁻¹ ∇_θ J at the current factors (J reads the first ``real_users`` user rows)."""
        p = self.user_factors.clone().requires_grad_(True)
        q = self.item_factors.clone().requires_grad_(True)
        grad_users, grad_items = torch.autograd.grad(objective(p[:real_users], q), (p, q))
        return self.inverse_hessian_product(values, grad_users, grad_items)

    def rating_gradient(self, weights: tuple[torch.Tensor, torch.Tensor], users: torch.Tensor,
                        items: torch.Tensor) -> torch.Tensor:
        """dJ/dr of the ratings (users, items), given ``weights`` = H⁻¹ ∇_θ J."""
        w_users, w_items = weights
        return 2.0 * (torch.linalg.vecdot(w_users[users], self.item_factors[items])
                      + torch.linalg.vecdot(self.user_factors[users], w_items[items]))

"""RevAdv's "WMF-ALS" surrogate (Tang et al. RecSys'20, its ``sur_wmf_als`` setting): WMF trained by
alternating least squares, and a hypergradient through the last item solve only.

After ``sweeps`` ALS sweeps on Y = [R; X] (confidence α on a click, 1 elsewhere, λ = 0.05, from the
seed's N(0, 0.1²) start), every item's factor is the closed form q_v = A_v⁻¹ Pᵀ C_v y_v with
A_v = PᵀC_vP + λI. As in RevAdv, P and the confidences C_v are held constant, so the VJP of X → Q for a
cotangent c on Q is G[f, v] = c_fv · p_fᵀ A_v⁻¹ c_v: one batched solve of the item systems, no
unrolling (memory O(m·d²) per bucket instead of the unrolled epochs' tape). Cotangents on the user
blocks do not reach X (P is constant), so SharpAP's perturbation acts through the item gradient at
θ_E + v̂. The fit needs a binary X, which the outer loop's projection guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attacks.implicit.profiles import PoisonSetting
from attacks.implicit.surrogate import Objective, SurrogateFit, Theta, ThetaSurrogate, softmax_loss
from recsys.models.wrmf import als_solve, buckets


@dataclass(frozen=True)
class ALSSettings:
    """RevAdv's ``sur_wmf_als``: d = 128, 10 sweeps, λ = 0.05, α = 20 (``weight_alpha``)."""

    dim: int = 128
    sweeps: int = 10
    alpha: float = 20.0
    reg: float = 0.05
    hit_k: int = 50  # TargetHR@K used to keep the best iterate

    def __post_init__(self) -> None:
        if min(self.dim, self.sweeps, self.hit_k) < 1 or self.alpha < 1 or self.reg <= 0:
            raise ValueError(f"invalid WMF-ALS surrogate settings {self}")


class ALSSurrogate(ThetaSurrogate):
    """A WMF surrogate trained by ALS over the real rows of ``setting`` plus a fake matrix (see the module doc)."""

    def __init__(self, setting: PoisonSetting, settings: ALSSettings, seed: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 objective: Objective = softmax_loss) -> None:
        super().__init__(setting, seed, settings.dim, settings.alpha, settings.hit_k, dtype, device, objective)
        self.settings = settings

    def fit(self, fake: torch.Tensor, differentiable: bool = True) -> SurrogateFit:
        """``sweeps`` ALS sweeps on [R; ``fake``] (each solves the users, then the items); the VJP is always
        available (``differentiable`` is accepted for the surrogate interface)."""
        if not bool(((fake == 0) | (fake == 1)).all()):
            raise ValueError("the WMF-ALS surrogate trains on a binary fake matrix (0/1 entries)")
        home = fake.device
        fake = fake.detach().to(self.device, self.dtype)
        n, m = self.num_real, self.setting.num_items
        rows, cols = (t.cpu().numpy() for t in fake.nonzero(as_tuple=True))
        users = np.concatenate((self.real_pairs[0], n + rows))
        items = np.concatenate((self.real_pairs[1], cols))
        by_user = buckets(users, items, n + fake.shape[0], m, self.device)
        by_item = buckets(items, users, m, n + fake.shape[0], self.device)
        extra, reg = self.settings.alpha - 1.0, self.settings.reg  # confidence 1 + extra on a click
        q = self.initial_theta()["item"]
        for _ in range(self.settings.sweeps):
            p = als_solve(by_user, q, extra, reg, n + fake.shape[0])
            q = als_solve(by_item, p, extra, reg, m)
        theta = {"user_real": p[:n], "user_fake": p[n:], "item": q}

        def vjp(cotangent: Theta) -> torch.Tensor:
            solved = als_solve(by_item, p, extra, reg, m, rhs=cotangent["item"].to(self.device, self.dtype))
            return ((1.0 + extra * fake) * (p[n:] @ solved.T)).to(home)

        return SurrogateFit(theta, fake, vjp)

    def recommendation_loss(self, theta: Theta, fake: torch.Tensor) -> torch.Tensor:
        """The ALS objective: the weighted squared error plus λ‖Θ‖²."""
        penalty = sum(v.pow(2).sum() for v in theta.values())
        return super().recommendation_loss(theta, fake) + self.settings.reg * penalty

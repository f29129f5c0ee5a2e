"""RevAdv (Tang, Wen & Wang RecSys'20): fake users as a continuous matrix X optimised by a
hypergradient through the surrogate's training, generic over the surrogate.

Per outer iteration t: fit the surrogate on [R; X_t] (θ_E(X_t), differentiable), record its
TargetHR@K for X_t (the best iterate is kept), take the hypergradient G = (∂θ_E/∂X)ᵀ c with the
cotangent c = ∇θ L_adv(θ_E) (``plain_cotangent``; SharpAP substitutes its own), normalise G per
fake row, take a momentum-SGD descent step (lr 1, momentum 0.95) and project every row back to
binary: 1 where the entry exceeds RevAdv's threshold τ = 0.05 (its best configuration), keeping at
most the ``budget`` largest entries per row, so every attack has the same budget. ``threshold=None``
keeps exactly the ``budget`` largest (the top-k projection of RAPU / GradientPassing). With
``click_targets`` (RevAdv's setting for its WMF-ALS surrogate) the targets' hypergradient is zeroed and
every fake row clicks the targets after the projection, which keeps ``budget`` − |T| other entries.
X₀ = rows of random real users with at most ``budget`` items (``popular_initial_fake``: rows of their lengths drawn
by item popularity, copied from no one).

A surrogate is any object with ``fit(X, differentiable) -> SurrogateFit`` (θ, VJP through θ(X)),
``adversarial_loss(θ)``, ``adversarial_gradient(θ)`` and ``target_hit_ratio(θ)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from attacks.implicit.profiles import FakeProfiles, PoisonSetting
from attacks.implicit.surrogate import SurrogateFit, Theta

Cotangent = Callable[["Surrogate", SurrogateFit], tuple[Theta, dict[str, Any]]]
InitialFake = Callable[[PoisonSetting, np.random.Generator], torch.Tensor]  # X₀ of the loop


class Surrogate(Protocol):
    def fit(self, fake: torch.Tensor, differentiable: bool = True) -> SurrogateFit: ...
    def adversarial_loss(self, theta: Theta) -> torch.Tensor: ...
    def adversarial_gradient(self, theta: Theta) -> Theta: ...
    def target_hit_ratio(self, theta: Theta) -> float: ...


@dataclass(frozen=True)
class RevAdvSettings:
    iterations: int = 30
    lr: float = 1.0
    momentum: float = 0.95
    cos_every: int = 5  # with SharpAP: cos(G, G_sharp) every this many iterations (an extra VJP); 0 = never
    threshold: float | None = 0.05  # τ of the projection; None: exactly the budget's top-k
    click_targets: bool = False  # every fake row clicks the targets after each step

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or not 0 <= self.momentum < 1 or self.cos_every < 0 \
                or (self.threshold is not None and not math.isfinite(self.threshold)):
            raise ValueError(f"invalid RevAdv settings {self}")


def plain_cotangent(surrogate: Surrogate, fit: SurrogateFit) -> tuple[Theta, dict[str, Any]]:
    """RevAdv's cotangent: the adversarial gradient at θ_E."""
    return surrogate.adversarial_gradient(fit.theta), {}


def _users_to_copy(setting: PoisonSetting, rng: np.random.Generator) -> np.ndarray:
    """``num_fake`` random real users with 1 to ``budget`` items (with replacement only when there are too few)."""
    lengths = setting.train.lengths()
    pool = np.flatnonzero((lengths <= setting.budget) & (lengths > 0))
    if len(pool) == 0:
        raise ValueError(f"no real user has between 1 and {setting.budget} items to copy")
    return rng.choice(pool, setting.num_fake, replace=len(pool) < setting.num_fake)


def initial_fake(setting: PoisonSetting, rng: np.random.Generator) -> torch.Tensor:
    """X₀: the rows of ``num_fake`` random real users with at most ``budget`` items."""
    chosen = _users_to_copy(setting, rng)
    fake = torch.zeros(setting.num_fake, setting.num_items)
    sub = setting.train.subset(chosen)  # a copied row keeps its distinct items
    fake[torch.from_numpy(sub.row_ids()), torch.from_numpy(sub.items)] = 1.0
    return fake


def popular_initial_fake(setting: PoisonSetting, rng: np.random.Generator) -> torch.Tensor:
    """X₀ copied from no one: every fake row as long as a random real user's with at most ``budget`` items (the
    users ``initial_fake`` would copy), its items drawn without replacement in proportion to their training counts."""
    chosen = setting.train.lengths()[_users_to_copy(setting, rng)]
    with np.errstate(divide="ignore"):  # an item no one clicked is never drawn
        keys = rng.gumbel(size=(setting.num_fake, setting.num_items)) + np.log(setting.item_counts())
    ranked = np.argsort(-keys, axis=1)[:, : chosen.max()]  # Gumbel top-k: a weighted draw without replacement
    rows, ranks = np.nonzero(np.arange(chosen.max()) < chosen[:, None])  # each row's first chosen[f] draws
    fake = torch.zeros(setting.num_fake, setting.num_items)
    fake[torch.from_numpy(rows), torch.from_numpy(ranked[rows, ranks])] = 1.0
    return fake


def project(x: torch.Tensor, budget: int, threshold: float | None, clicked: torch.Tensor | None = None) -> torch.Tensor:
    """1 on the ``budget`` largest entries of every row that exceed ``threshold`` (all of them
    when ``threshold`` is None), 0 elsewhere; with ``clicked`` columns, those are 1 in every row and the
    rest of the row keeps at most ``budget`` − len(clicked) entries."""
    if clicked is not None:
        x, budget = x.index_fill(1, clicked, -math.inf), budget - len(clicked)
    out = torch.zeros_like(x).scatter_(1, x.topk(budget, dim=1).indices, 1.0)
    out = out if threshold is None else out * (x > threshold)
    return out if clicked is None else out.index_fill_(1, clicked, 1.0)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).item())


def run(surrogate: Surrogate, setting: PoisonSetting, settings: RevAdvSettings, rng: np.random.Generator,
        cotangent: Cotangent = plain_cotangent,
        on_iteration: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
        initial: InitialFake = initial_fake
        ) -> tuple[FakeProfiles, list[dict[str, Any]]]:
    """The RevAdv loop from X₀ = ``initial(setting, rng)`` with the given cotangent rule; returns the best iterate and
    one row per iteration. ``on_iteration(row, X_t)`` sees every iteration's row and the iterate X_t it scored."""
    fake = initial(setting, rng)
    clicked = torch.as_tensor(setting.targets, dtype=torch.long) if settings.click_targets else None
    velocity = torch.zeros_like(fake)
    best_hr, best = -1.0, fake
    history: list[dict[str, Any]] = []
    for t in range(settings.iterations + 1):
        start = time.perf_counter()
        last = t == settings.iterations
        scored = fake
        fit = surrogate.fit(fake, differentiable=not last)
        row: dict[str, Any] = {"iteration": t, "surrogate_hr": surrogate.target_hit_ratio(fit.theta)}
        if row["surrogate_hr"] > best_hr:
            best_hr, best = row["surrogate_hr"], fake
        if not last:
            cot, diagnostics = cotangent(surrogate, fit)
            plain = diagnostics.pop("plain", None)
            grad = fit.vjp(cot)
            if plain is not None and settings.cos_every and t % settings.cos_every == 0:
                diagnostics["cos_G"] = _cosine(fit.vjp(plain), grad)
            row.update(diagnostics)
            if clicked is not None:
                grad = grad.index_fill(1, clicked, 0.0)
            grad = grad / grad.norm(dim=1, keepdim=True).clamp(min=torch.finfo(grad.dtype).tiny)
            velocity = settings.momentum * velocity + grad
            fake = project(fake - settings.lr * velocity, setting.budget, settings.threshold, clicked)
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        if on_iteration is not None:
            on_iteration(row, scored)
    return FakeProfiles.from_matrix(best, setting.budget), history

"""SharpAP (Xie et al. 2026): sharpness-aware poisoning as a wrapper of a gradient attack's
hypergradient. Reconstructed (only the paper's summary is public; see docs/sharpap.md):

after the surrogate is trained (θ_E), find an approximately worst-case victim near θ_E and take
the hypergradient there with the perturbation held constant:
G_sharp = (∂θ_E/∂X)ᵀ ∇θ L_adv(θ)|_{θ = θ_E + v̂}, one VJP through the unrolled training.

* ``block`` (default; AWP-style): v̂_B = κ·‖θ_B‖·g_B/‖g_B‖ for every block of Θ (real users, fake
  users, items), so the real users' embeddings move too.
* ``global``: one SAM step v̂ = ρ·g/‖g‖₂, g = ∇θ L_adv(θ_E), with ρ = κ·‖Q_T‖_F (relative to the
  target items' rows, where almost all of ‖g‖ sits; on ML-1M this leaves G_sharp parallel to G).
* ``ksteps``: ``steps`` normalised ascent steps of length ρ/2 projected to ‖v‖ ≤ ρ, a step being
  rejected when it raises the recommendation loss above (1 + ξ)·L_rec(θ_E) (the summary's
  loss-threshold victim space).

κ = 0 gives v̂ = 0, so the cotangent, and the attack, equal RevAdv's bit for bit.

Besides RevAdv's surrogate interface, SharpAP reads ``target_norm(θ)`` (the radius scale) and, for
``ksteps``, ``recommendation_loss(θ, X)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from attacks.implicit.revadv import Surrogate
from attacks.implicit.surrogate import SurrogateFit, Theta

MODES = ("block", "global", "ksteps")


@dataclass(frozen=True)
class SharpSettings:
    kappa: float = 0.1  # radius relative to ‖Q_T‖_F (global, ksteps) or to each ‖θ_B‖ (block)
    mode: str = "block"
    steps: int = 3  # ksteps: ascent steps
    xi: float = 0.05  # ksteps: allowed relative rise of the recommendation loss

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown SharpAP mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.kappa < 0 or self.steps < 1 or self.xi < 0:
            raise ValueError(f"invalid SharpAP settings {self}")


def _norm(tensors: Theta) -> torch.Tensor:
    return torch.sqrt(sum(v.pow(2).sum() for v in tensors.values()))


def _add(theta: Theta, delta: Theta, scale: torch.Tensor | float = 1.0) -> Theta:
    return {k: theta[k] + scale * delta[k] for k in theta}


def perturbation(surrogate: Surrogate, fit: SurrogateFit, gradient: Theta, settings: SharpSettings) -> Theta:
    """v̂ for the surrogate fit (see the module doc)."""
    tiny = torch.finfo(torch.float32).tiny
    if settings.mode == "block":
        return {k: settings.kappa * fit.theta[k].norm() * g / g.norm().clamp(min=tiny) for k, g in gradient.items()}
    rho = settings.kappa * surrogate.target_norm(fit.theta)
    if settings.mode == "global":
        return {k: rho * g / _norm(gradient).clamp(min=tiny) for k, g in gradient.items()}
    limit = (1.0 + settings.xi) * surrogate.recommendation_loss(fit.theta, fit.fake)
    v = {k: torch.zeros_like(g) for k, g in gradient.items()}
    g = gradient
    for _ in range(settings.steps):
        step = _add(v, g, rho / 2 / _norm(g).clamp(min=tiny))
        size = _norm(step)
        step = {k: s * torch.clamp(rho / size.clamp(min=tiny), max=1.0) for k, s in step.items()}
        if surrogate.recommendation_loss(_add(fit.theta, step), fit.fake) > limit:
            break
        v = step
        g = surrogate.adversarial_gradient(_add(fit.theta, v))
    return v


class SharpAP:
    """A cotangent rule for ``attacks.implicit.revadv.run`` (any gradient attack exposing θ, L_adv
    and a VJP through θ(X))."""

    def __init__(self, settings: SharpSettings) -> None:
        self.settings = settings

    def __call__(self, surrogate: Surrogate, fit: SurrogateFit) -> tuple[Theta, dict[str, Any]]:
        gradient = surrogate.adversarial_gradient(fit.theta)
        v = perturbation(surrogate, fit, gradient, self.settings)
        perturbed = _add(fit.theta, v)
        sharp = surrogate.adversarial_gradient(perturbed)
        flat_g = torch.cat([g.reshape(-1) for g in gradient.values()])
        flat_s = torch.cat([g.reshape(-1) for g in sharp.values()])
        diagnostics = {
            "plain": gradient,
            "cos_theta": float(torch.nn.functional.cosine_similarity(flat_g, flat_s, dim=0)),
            "v_norm": float(_norm(v)),
            "adv_loss": float(surrogate.adversarial_loss(fit.theta)),
            "adv_loss_perturbed": float(surrogate.adversarial_loss(perturbed)),
            "surrogate_hr_perturbed": surrogate.target_hit_ratio(perturbed),
        }
        return sharp, diagnostics

"""The WMF surrogate of RevAdv (Tang et al. RecSys'20), trained by Adam on dense user rows, with
the last ``unroll`` epochs differentiated w.r.t. the fake rows (truncated unrolling).

Inner loss on a batch of rows of Y = [R; X]: Σ_u Σ_i w_ui (y_ui − p_uᵀq_i)², w_ui = α if y_ui > 0
else 1 (the weights come from the mask, so X's gradient flows through the residual only).
Θ = {user_real: P_real, user_fake: P_fake, item: Q}. Adam (lr 1e-2, L2 1e-5 through the gradient,
as torch's ``weight_decay``) is written functionally: the inner gradients are ``torch.func.grad``
and θ_E(X) is differentiated with ``torch.func.vjp``, so any cotangent on Θ (the adversarial
gradient at θ_E, or at a perturbed θ_E + v for SharpAP) maps to ∂/∂X with one VJP.

Adversarial loss: L_adv(θ) = −mean over real users u and targets t of log softmax_t(s_u·), all items
in the softmax (RevAdv sums over users; the mean only rescales a row-normalised hypergradient).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from attacks.implicit.profiles import PoisonSetting
from recsys.promotion_metrics import promotion

Theta = dict[str, torch.Tensor]
BETAS, EPS = (0.9, 0.999), 1e-8
INIT_STD = 0.1


@dataclass(frozen=True)
class WMFSettings:
    """RevAdv's defaults: d = 128, 50 epochs with the last 10 unrolled, Adam lr 1e-2, L2 1e-5,
    α = 20, batches of 2048 user rows. ``warm_epochs`` > 0: after the first fit, start from the
    previous θ and train ``warm_epochs`` plain epochs before the unrolled ones (a lean-preset lever).
    The first fit then still needs enough ``epochs`` for its TargetHR to compare with the warm fits'
    (the best iterate is chosen across them): on ML-1M a 13-epoch fit of X₀ scored a popular
    target's H@50 1.6–1.7× higher than a 26- or 40-epoch fit, and RevAdv kept X₀ as its best iterate."""

    dim: int = 128
    epochs: int = 50
    unroll: int = 10
    lr: float = 1e-2
    weight_decay: float = 1e-5
    alpha: float = 20.0
    batch_rows: int = 2048
    warm_epochs: int = 0
    hit_k: int = 50  # TargetHR@K used to keep the best iterate

    def __post_init__(self) -> None:
        if min(self.dim, self.epochs, self.batch_rows, self.hit_k) < 1 or not 0 <= self.unroll <= self.epochs \
                or self.warm_epochs < 0 or self.lr <= 0:
            raise ValueError(f"invalid WMF surrogate settings {self}")


@dataclass
class SurrogateFit:
    """θ_E trained on the fake matrix ``fake`` and the VJP of the map fake → θ_E."""

    theta: Theta
    fake: torch.Tensor
    vjp: Callable[[Theta], torch.Tensor]


def adam_step(theta: Theta, grads: Theta, state: tuple[Theta, Theta], step: int, lr: float,
              weight_decay: float) -> tuple[Theta, tuple[Theta, Theta]]:
    """One Adam step (torch.optim.Adam's update with L2 weight decay), functional."""
    first, second = state
    new_theta, new_first, new_second = {}, {}, {}
    for name, value in theta.items():
        grad = grads[name] + weight_decay * value
        new_first[name] = BETAS[0] * first[name] + (1 - BETAS[0]) * grad
        new_second[name] = BETAS[1] * second[name] + (1 - BETAS[1]) * grad * grad
        corrected = new_first[name] / (1 - BETAS[0] ** step)
        scale = (new_second[name] / (1 - BETAS[1] ** step)).sqrt() + EPS
        new_theta[name] = value - lr * corrected / scale
    return new_theta, (new_first, new_second)


class WMFSurrogate:
    """A WMF surrogate over the real rows of ``setting`` plus a fake matrix (see the module doc)."""

    def __init__(self, setting: PoisonSetting, settings: WMFSettings, seed: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        self.setting, self.settings, self.seed, self.dtype = setting, settings, seed, dtype
        self.device = torch.device(device)
        train = setting.train
        self.real = torch.zeros(train.num_users, setting.num_items, dtype=dtype)
        self.real[torch.from_numpy(train.row_ids()), torch.from_numpy(train.items)] = 1.0
        self.real = self.real.to(self.device)
        self.targets = torch.as_tensor(setting.targets, dtype=torch.long, device=self.device)
        self.previous: Theta | None = None

    def initial_theta(self) -> Theta:
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/wmf-init".encode()))
        n, f, m, d = self.setting.train.num_users, self.setting.num_fake, self.setting.num_items, self.settings.dim
        return {name: (INIT_STD * torch.randn(rows, d, generator=g, dtype=self.dtype)).to(self.device)
                for name, rows in (("user_real", n), ("user_fake", f), ("item", m))}

    def batch_loss(self, theta: Theta, rows: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        users = torch.cat((theta["user_real"], theta["user_fake"]))[batch]
        weights = torch.where(rows > 0, self.settings.alpha, 1.0)
        return (weights * (rows - users @ theta["item"].T) ** 2).sum()

    def recommendation_loss(self, theta: Theta, fake: torch.Tensor) -> torch.Tensor:
        """The inner loss over every row of Y = [R; X]."""
        everyone = torch.arange(self.real.shape[0] + fake.shape[0], device=self.device)
        return self.batch_loss(theta, torch.cat((self.real, fake)), everyone)

    def _epochs(self, theta: Theta, state, step: int, fake: torch.Tensor, orders: list[torch.Tensor]):
        """Adam over the row batches of each order; returns (θ, state, step)."""
        rows_all = torch.cat((self.real, fake))
        gradient = torch.func.grad(self.batch_loss)
        for order in orders:
            for batch in order.split(self.settings.batch_rows):
                step += 1
                grads = gradient(theta, rows_all[batch], batch)
                theta, state = adam_step(theta, grads, state, step, self.settings.lr, self.settings.weight_decay)
        return theta, state, step

    def fit(self, fake: torch.Tensor, differentiable: bool = True) -> SurrogateFit:
        """Train on [R; ``fake``]: plain epochs, then ``unroll`` epochs through ``torch.func.vjp``."""
        s = self.settings
        warm = s.warm_epochs > 0 and self.previous is not None
        theta = self.previous if warm else self.initial_theta()
        plain = s.warm_epochs if warm else s.epochs - s.unroll
        unroll = s.unroll if differentiable else 0
        plain += 0 if differentiable else s.unroll
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/wmf-shuffle".encode()))
        total_rows = self.real.shape[0] + fake.shape[0]
        orders = [torch.randperm(total_rows, generator=g).to(self.device) for _ in range(plain + unroll)]
        state = ({k: torch.zeros_like(v) for k, v in theta.items()}, {k: torch.zeros_like(v) for k, v in theta.items()})
        home = fake.device  # the outer loop's X stays where it is; the fit runs on ``self.device``
        fake = fake.detach().to(self.device, self.dtype)
        theta, state, step = self._epochs(theta, state, 0, fake, orders[:plain])

        def unrolled(x: torch.Tensor) -> Theta:
            return self._epochs(theta, state, step, x, orders[plain:])[0]

        theta_e, vjp = torch.func.vjp(unrolled, fake) if unroll else (theta, None)
        self.previous = {k: v.detach() for k, v in theta_e.items()}
        return SurrogateFit(self.previous, fake, (lambda cot: vjp(cot)[0].to(home)) if vjp is not None else _no_vjp)

    def adversarial_loss(self, theta: Theta) -> torch.Tensor:
        logp = torch.log_softmax(theta["user_real"] @ theta["item"].T, dim=1)[:, self.targets]
        return -logp.mean()

    def target_norm(self, theta: Theta) -> torch.Tensor:
        """‖Q_T‖_F, the scale SharpAP's radius is relative to."""
        return theta["item"][self.targets].norm()

    def target_hit_ratio(self, theta: Theta) -> float:
        """Mean H@K of the targets on the surrogate (K = ``hit_k``), over the real users."""
        scorer = _ThetaScorer(theta)
        return float(promotion(scorer, self.setting.train, np.asarray(self.setting.targets),
                               (self.settings.hit_k,))[f"hr@{self.settings.hit_k}"])


def _no_vjp(cotangent: Theta) -> torch.Tensor:
    raise RuntimeError("this surrogate fit was not differentiable")


class _ThetaScorer:
    def __init__(self, theta: Theta) -> None:
        self.theta = theta

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.theta["user_real"][users.to(self.theta["item"].device)] @ self.theta["item"].T

"""The WMF surrogate of RevAdv (Tang et al. RecSys'20), trained by Adam on batches of user rows (``rows``: dense
as in RevAdv, or the real rows as clicks on sparse data), with the last ``unroll`` epochs
differentiated w.r.t. the fake rows (truncated unrolling).

Inner loss (``rows``): the weights come from the mask, so X's gradient flows
through the residual only. Adam (lr 1e-2, L2 1e-5 through the gradient,
as torch's ``weight_decay``) is written functionally: the inner gradients are ``torch.func.grad``
and θ_E(X) is differentiated with ``torch.func.vjp`` one Adam step at a time, backwards from each unrolled
step's saved input (θ and the two moments): 3|θ| kept per step instead of the whole tape, for one extra forward
pass. Any cotangent on Θ (the adversarial gradient at θ_E, or at a perturbed θ_E + v for SharpAP) maps to ∂/∂X
with one such reverse pass.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attacks.implicit.profiles import PoisonSetting
from attacks.implicit.surrogate import Objective, SurrogateFit, Theta, ThetaSurrogate, softmax_loss

BETAS, EPS = (0.9, 0.999), 1e-8
AdamState = tuple[Theta, Theta]  # (first, second) moments


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


def adam_step(theta: Theta, grads: Theta, state: AdamState, step: int, lr: float,
              weight_decay: float) -> tuple[Theta, AdamState]:
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


class WMFSurrogate(ThetaSurrogate):
    """A WMF surrogate trained by Adam over the real rows of ``setting`` plus a fake matrix (see the module doc)."""

    def __init__(self, setting: PoisonSetting, settings: WMFSettings, seed: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 objective: Objective = softmax_loss) -> None:
        super().__init__(setting, seed, settings.dim, settings.alpha, settings.hit_k, dtype, device, objective)
        self.settings = settings
        self.previous: Theta | None = None

    def _step(self, step: int, batch: torch.Tensor, theta: Theta, state: AdamState, fake: torch.Tensor
              ) -> tuple[Theta, AdamState]:
        """Adam step ``step`` on the rows ``batch`` of [R; ``fake``]."""
        grads = torch.func.grad(self.rows(fake).loss)(theta, batch)
        return adam_step(theta, grads, state, step, self.settings.lr, self.settings.weight_decay)

    def _steps(self, step: int, orders: list[torch.Tensor]) -> list[tuple[int, torch.Tensor]]:
        """(step number, row batch) of every Adam step over the row orders, the first numbered ``step`` + 1."""
        batches = [batch for order in orders for batch in order.split(self.settings.batch_rows)]
        return list(enumerate(batches, start=step + 1))

    def _epochs(self, theta: Theta, state: AdamState, step: int, fake: torch.Tensor, orders: list[torch.Tensor]
                ) -> tuple[Theta, AdamState, int]:
        """Adam over the row batches of each order; returns (θ, state, step)."""
        for step, batch in self._steps(step, orders):
            theta, state = self._step(step, batch, theta, state, fake)
        return theta, state, step

    def _unrolled(self, theta: Theta, state: AdamState, step: int, fake: torch.Tensor, orders: list[torch.Tensor]
                  ) -> tuple[Theta, Callable[[Theta], torch.Tensor]]:
        """θ_E after the epochs ``orders`` and the VJP of ``fake`` → θ_E, taken one Adam step at a time backwards
        from each step's saved input (θ, Adam state): 3|θ| kept per step instead of the whole tape."""
        inputs = []
        for step, batch in self._steps(step, orders):
            inputs.append((step, batch, theta, state))
            theta, state = self._step(step, batch, theta, state, fake)

        def vjp(cotangent: Theta) -> torch.Tensor:
            cot_theta, cot_state = cotangent, tuple({k: torch.zeros_like(v) for k, v in m.items()} for m in state)
            cot_fake = torch.zeros_like(fake)
            for step_k, batch, theta_k, state_k in reversed(inputs):
                _, pull = torch.func.vjp(functools.partial(self._step, step_k, batch), theta_k, state_k, fake)
                cot_theta, cot_state, cot_step = pull((cot_theta, cot_state))
                cot_fake += cot_step
            return cot_fake

        return theta, vjp

    def fit(self, fake: torch.Tensor, differentiable: bool = True) -> SurrogateFit:
        """Train on [R; ``fake``]: plain epochs, then ``unroll`` epochs through ``torch.func.vjp``."""
        s = self.settings
        warm = s.warm_epochs > 0 and self.previous is not None
        theta = self.previous if warm else self.initial_theta()
        plain = s.warm_epochs if warm else s.epochs - s.unroll
        unroll = s.unroll if differentiable else 0
        plain += 0 if differentiable else s.unroll
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/wmf-shuffle".encode()))
        total_rows = self.num_real + fake.shape[0]
        orders = [torch.randperm(total_rows, generator=g).to(self.device) for _ in range(plain + unroll)]
        state = ({k: torch.zeros_like(v) for k, v in theta.items()}, {k: torch.zeros_like(v) for k, v in theta.items()})
        home = fake.device  # the outer loop's X stays where it is; the fit runs on ``self.device``
        fake = fake.detach().to(self.device, self.dtype)
        theta, state, step = self._epochs(theta, state, 0, fake, orders[:plain])
        theta_e, vjp = self._unrolled(theta, state, step, fake, orders[plain:]) if unroll else (theta, None)
        self.previous = {k: v.detach() for k, v in theta_e.items()}
        return SurrogateFit(self.previous, fake, (lambda cot: vjp(cot).to(home)) if vjp is not None else _no_vjp)


def _no_vjp(cotangent: Theta) -> torch.Tensor:
    raise RuntimeError("this surrogate fit was not differentiable")


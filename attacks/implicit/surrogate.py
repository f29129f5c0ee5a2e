"""What every surrogate of the gradient attacks shares: Θ = {user_real: P_real, user_fake: P_fake,
item: Q}, the fit it returns (θ_E and the VJP of the map X → θ_E), RevAdv's adversarial loss and the
surrogate's target hit ratio.

Adversarial loss: an ``Objective`` of the real users' scores S = P_real Qᵀ over all items and the targets;
RevAdv's (the default, ``softmax_loss``) is L_adv = −mean over real users u and targets t of log softmax_t(s_u·),
all items in the softmax (RevAdv sums over users; the mean only rescales a row-normalised hypergradient).
Inner loss: the weighted squared error over the rows Y = [R; X] (``rows``: dense, or the real rows as clicks).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from attacks.implicit.profiles import PoisonSetting
from attacks.implicit.rows import CLICK_ROWS_BELOW, ClickRows, Clicks, DenseRows
from recsys.promotion_metrics import promotion

Theta = dict[str, torch.Tensor]
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real users' scores [n, m], targets) -> L_adv
INIT_STD = 0.1


SCORE_CHUNK = 2**26  # scores held at once when L_adv is a mean over the users (ML-1M's 22.4 M fit in one chunk)
_USER_MEANS: set[Objective] = set()


def user_mean(objective: Objective) -> Objective:
    """Declare ``objective`` a mean over the real users (every user weighing the same), so that the surrogate
    takes it and its gradient in chunks of users: the n × m scores never exist whole (full Gowalla: 1.2 G)."""
    _USER_MEANS.add(objective)
    return objective


@user_mean
def softmax_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RevAdv's L_adv: −mean over the users and targets of log softmax_t(s_u·)."""
    return -torch.log_softmax(scores, dim=1)[:, targets].mean()


@dataclass
class SurrogateFit:
    """θ_E trained on the fake matrix ``fake`` and the VJP of the map fake → θ_E."""

    theta: Theta
    fake: torch.Tensor
    vjp: Callable[[Theta], torch.Tensor]


class ThetaSurrogate:
    """The parts of a matrix-factorisation surrogate over the real rows of ``setting`` plus a fake
    matrix that do not depend on how it is trained."""

    def __init__(self, setting: PoisonSetting, seed: int, dim: int, alpha: float, hit_k: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 objective: Objective = softmax_loss) -> None:
        self.setting, self.seed, self.dim, self.alpha, self.hit_k, self.dtype = setting, seed, dim, alpha, hit_k, dtype
        self.objective = objective
        self.device = torch.device(device)
        train, m = setting.train, setting.num_items
        self.num_real = train.num_users
        pairs = np.unique(train.row_ids() * m + train.items)  # distinct clicks, ordered by user
        self.real_pairs = (pairs // m, pairs % m)
        indptr = np.zeros(train.num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.real_pairs[0], minlength=train.num_users), out=indptr[1:])
        clicks = Clicks(torch.from_numpy(indptr).to(self.device), torch.from_numpy(self.real_pairs[1]).to(self.device))
        dense = len(pairs) >= CLICK_ROWS_BELOW * train.num_users * m
        self.real: torch.Tensor | Clicks = clicks.dense(m, dtype) if dense else clicks
        self.targets = torch.as_tensor(setting.targets, dtype=torch.long, device=self.device)

    def initial_theta(self) -> Theta:
        """N(0, 0.1²) embeddings from the seed's stream."""
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/wmf-init".encode()))
        n, f, m = self.setting.train.num_users, self.setting.num_fake, self.setting.num_items
        return {name: (INIT_STD * torch.randn(rows, self.dim, generator=g, dtype=self.dtype)).to(self.device)
                for name, rows in (("user_real", n), ("user_fake", f), ("item", m))}

    def rows(self, fake: torch.Tensor) -> DenseRows | ClickRows:
        """Y = [R; ``fake``] for the inner loss."""
        if isinstance(self.real, Clicks):
            return ClickRows(self.real, fake, self.alpha)
        return DenseRows(self.real, fake, self.alpha)

    def recommendation_loss(self, theta: Theta, fake: torch.Tensor) -> torch.Tensor:
        """The inner loss over every row of Y = [R; X]."""
        everyone = torch.arange(self.num_real + fake.shape[0], device=self.device)
        return self.rows(fake.to(self.device, self.dtype)).loss(theta, everyone)

    def _user_chunks(self) -> list[tuple[int, int]]:
        """Spans of real users whose scores are taken at once: all of them unless L_adv is a user mean."""
        n = self.num_real
        size = max(1, SCORE_CHUNK // self.setting.num_items) if self.objective in _USER_MEANS else n
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    def _chunk_loss(self, theta: Theta, start: int, stop: int) -> torch.Tensor:
        """L_adv of users ``start``..``stop``, weighted by their share of the real users."""
        share = (stop - start) / self.num_real
        return self.objective(theta["user_real"][start:stop] @ theta["item"].T, self.targets) * share

    def adversarial_loss(self, theta: Theta) -> torch.Tensor:
        return sum(self._chunk_loss(theta, start, stop) for start, stop in self._user_chunks())

    def adversarial_gradient(self, theta: Theta) -> Theta:
        """∇θ L_adv at ``theta``, summed over the chunks of users."""
        total: Theta = {}
        for start, stop in self._user_chunks():
            grads = torch.func.grad(self._chunk_loss)(theta, start, stop)
            total = grads if not total else {k: total[k] + grads[k] for k in total}
        return total

    def target_norm(self, theta: Theta) -> torch.Tensor:
        """‖Q_T‖_F, the scale SharpAP's radius is relative to."""
        return theta["item"][self.targets].norm()

    def target_hit_ratio(self, theta: Theta) -> float:
        """Mean H@K of the targets on the surrogate (K = ``hit_k``), over the real users."""
        return float(promotion(_ThetaScorer(theta), self.setting.train, np.asarray(self.setting.targets),
                               (self.hit_k,))[f"hr@{self.hit_k}"])


class _ThetaScorer:
    def __init__(self, theta: Theta) -> None:
        self.theta = theta

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.theta["user_real"][users.to(self.theta["item"].device)] @ self.theta["item"].T

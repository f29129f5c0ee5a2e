"""The rows Y = [R; X] of a WMF surrogate's inner loss Σ_u Σ_i w_ui (y_ui − p_uᵀq_i)², w_ui = α if y_ui > 0
else 1 (RevAdv's ``weight_alpha``), in one of two exact forms chosen by the real rows' density:

* ``DenseRows``: Y as one dense matrix, RevAdv's own computation; cost O(rows · m · d) per batch.
* ``ClickRows``: the real rows are binary and sparse, so their part comes from their clicks alone (the identity
  of Hu, Koren & Volinsky's implicit ALS): Σ_i s_ui² = p_uᵀ(QᵀQ)p_u over all items, and each click replaces
  its s_ui² by α(1 − s_ui)². Memory and time O(clicks · d + m · d²) per batch, no n × m matrix; the fake rows
  (the variable X, few) stay dense.

On ML-1M (4.5 % of the entries clicked) both cost about the same forward, and the clicks' gathers make the
unrolled second-order pass slower, so real rows stay dense down to ``CLICK_ROWS_BELOW`` of their entries clicked
(the Gowalla subsample, 0.34 %, and the full split, 0.066 %, use the clicks). Both forms are the same loss
(``tests/test_sharpap.py``); the weights come from the mask, so X's gradient flows through the residual only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn.functional import embedding  # a row gather whose backward adds repeated rows in a fixed order

if TYPE_CHECKING:  # surrogate imports this module
    from attacks.implicit.surrogate import Theta
CLICK_ROWS_BELOW = 0.01  # share of the real n × m entries clicked under which the real rows are kept as clicks


def _weighted_error(rows: torch.Tensor, users: torch.Tensor, items: torch.Tensor, alpha: float) -> torch.Tensor:
    return (torch.where(rows > 0, alpha, 1.0) * (rows - users @ items.T) ** 2).sum()


class Clicks:
    """The distinct clicks of the real users in CSR form (``indptr`` [n + 1], ``items``), on one device."""

    def __init__(self, indptr: torch.Tensor, items: torch.Tensor) -> None:
        self.indptr, self.items = indptr, items

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    def of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position in ``users``, item) of every click of ``users``."""
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        positions = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        within = torch.arange(len(positions), device=users.device) - (torch.cumsum(counts, 0) - counts)[positions]
        return positions, self.items[starts[positions] + within]

    def dense(self, num_items: int, dtype: torch.dtype) -> torch.Tensor:
        """R as a dense n × ``num_items`` 0/1 matrix."""
        real = torch.zeros(self.num_users, num_items, dtype=dtype, device=self.indptr.device)
        rows = torch.repeat_interleave(torch.arange(self.num_users, device=real.device), torch.diff(self.indptr))
        real[rows, self.items] = 1.0
        return real


class DenseRows:
    """Y = [R; X] with R dense (the rows of a batch are gathered from R and X, never concatenated whole)."""

    def __init__(self, real: torch.Tensor, fake: torch.Tensor, alpha: float) -> None:
        self.real, self.fake, self.alpha = real, fake, alpha

    def loss(self, theta: Theta, batch: torch.Tensor) -> torch.Tensor:
        """The weighted squared error of the rows ``batch`` of Y."""
        n = len(self.real)
        rows = torch.where((batch < n)[:, None], self.real[batch.clamp(max=n - 1)], self.fake[(batch - n).clamp(min=0)])
        users = torch.cat((theta["user_real"], theta["user_fake"]))[batch]
        return _weighted_error(rows, users, theta["item"], self.alpha)


class ClickRows:
    """Y = [R; X] with R as its clicks (see the module doc)."""

    def __init__(self, clicks: Clicks, fake: torch.Tensor, alpha: float) -> None:
        self.clicks, self.fake, self.alpha = clicks, fake, alpha

    def loss(self, theta: Theta, batch: torch.Tensor) -> torch.Tensor:
        """The weighted squared error of the rows ``batch`` of Y."""
        n, items = self.clicks.num_users, theta["item"]
        real, fake = batch[batch < n], batch[batch >= n] - n
        users = theta["user_real"][real]
        positions, clicked = self.clicks.of(real)
        scores = (embedding(positions, users) * embedding(clicked, items)).sum(1)
        real_part = ((users @ (items.T @ items)) * users).sum() + (self.alpha * (1 - scores) ** 2 - scores ** 2).sum()
        return real_part + _weighted_error(self.fake[fake], theta["user_fake"][fake], items, self.alpha)

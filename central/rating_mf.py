"""Explicit-rating matrix factorisation (the TCD paper's MF) as a central-mode learner.

r̂_ui = p_u · q_i on ratings normalised to (0, 1]; loss = MSE + λ (mean(p_u²) + mean(q_i²)) over
the batch's factor entries (λ = 0.005, as the authors' code regularises), Adam, batch 2048,
d = 128, and the epoch of smallest validation MSE is kept. Θ = the item factors; user factors
and the optimiser state stay on the client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from central.learner import CentralLearner, Parameters
from central.rating_split import RatingSplit, RatingTriples

ITEM_FACTORS = "item_factors"


@dataclass(frozen=True)
class MFConfig:
    """The paper's MF settings (lr is not given in the paper; 0.001 chosen on validation MSE)."""

    dim: int = 128
    batch_size: int = 2048
    l2: float = 0.005
    lr: float = 0.001
    epochs: int = 40

    def __post_init__(self) -> None:
        if self.dim < 1 or self.batch_size < 1 or self.epochs < 1 or self.l2 < 0 or self.lr <= 0:
            raise ValueError(f"invalid MF settings {self}: dim, batch_size, epochs must be >= 1, l2 >= 0, lr > 0")


# (model, dense clean-loss gradients of P and Q) -> perturbations of P and Q (AT, RAT)
Perturbation = Callable[["MatrixFactorization", torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class MatrixFactorization:
    """P [users, d], Q [items, d] with Xavier-uniform initialisation and their Adam optimiser.

    The batch gradients are written out by hand (the model is bilinear), which makes an epoch
    over the ~1.4 M TCD pseudo-labels about 3x faster than autograd; a test checks them against
    autograd."""

    def __init__(self, num_users: int, num_items: int, config: MFConfig, generator: torch.Generator) -> None:
        self.config, self.generator = config, generator
        self.user_factors = self._xavier(num_users, config.dim)
        self.item_factors = self._xavier(num_items, config.dim)
        self.optimizer = torch.optim.Adam([self.user_factors, self.item_factors], lr=config.lr, fused=True)

    def _xavier(self, rows: int, cols: int) -> torch.Tensor:
        bound = (6.0 / (rows + cols)) ** 0.5
        return (torch.rand(rows, cols, generator=self.generator) * 2 - 1) * bound

    @torch.no_grad()
    def clean_gradients(self, users: torch.Tensor, items: torch.Tensor,
                        values: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """The batch's MSE and the gradients of MSE + regulariser w.r.t. P and Q (dense tables)."""
        p, q = self.user_factors.index_select(0, users), self.item_factors.index_select(0, items)
        error = torch.linalg.vecdot(p, q) - values
        weight = (error * (2.0 / len(values))).unsqueeze(1)
        decay = 2.0 * self.config.l2 / p.numel()
        grad_p, grad_q = (q * weight).add_(p, alpha=decay), (p * weight).add_(q, alpha=decay)
        return (float(error.square().mean()), torch.zeros_like(self.user_factors).index_add_(0, users, grad_p),
                torch.zeros_like(self.item_factors).index_add_(0, items, grad_q))

    @torch.no_grad()
    def add_perturbed_gradients(self, users: torch.Tensor, items: torch.Tensor, values: torch.Tensor,
                                delta_users: torch.Tensor, delta_items: torch.Tensor,
                                grad_users: torch.Tensor, grad_items: torch.Tensor) -> None:
        """Add the gradients of the MSE under P + Δ_P, Q + Δ_Q (the Δs held constant) in place."""
        p = self.user_factors.index_select(0, users) + delta_users.index_select(0, users)
        q = self.item_factors.index_select(0, items) + delta_items.index_select(0, items)
        error = ((torch.linalg.vecdot(p, q) - values) * (2.0 / len(values))).unsqueeze(1)
        grad_users.index_add_(0, users, error * q)
        grad_items.index_add_(0, items, error * p)

    def train_epoch(self, data: RatingTriples, perturbation: Perturbation | None = None) -> float:
        """One shuffled pass over ``data`` in mini-batches; with a perturbation (AT/RAT) each step also
        minimises the MSE under the perturbed factors. Returns the mean clean loss."""
        order = torch.randperm(len(data), generator=self.generator)
        total = 0.0
        for start in range(0, len(data), self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            users, items, values = data.users[batch], data.items[batch], data.values[batch]
            loss, grad_users, grad_items = self.clean_gradients(users, items, values)
            if perturbation is not None:
                delta_users, delta_items = perturbation(self, grad_users, grad_items)
                self.add_perturbed_gradients(users, items, values, delta_users, delta_items, grad_users, grad_items)
            self.user_factors.grad, self.item_factors.grad = grad_users, grad_items
            self.optimizer.step()
            total += loss * len(batch)
        return total / max(1, len(data))

    @torch.no_grad()
    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users] * self.item_factors[items]).sum(1)

    @torch.no_grad()
    def scores(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted normalised ratings of ``users`` (default: all) for every item."""
        p = self.user_factors if users is None else self.user_factors[users]
        return p @ self.item_factors.T

    @torch.no_grad()
    def mse(self, data: RatingTriples) -> float:
        return float(((data.values - self.predict(data.users, data.items)) ** 2).mean())

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_factors.clone(), self.item_factors.clone()

    @torch.no_grad()
    def load_state(self, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.user_factors.copy_(state[0])
        self.item_factors.copy_(state[1])


class BestValidation:
    """Keeps the state of the epoch with the smallest validation MSE."""

    def __init__(self) -> None:
        self.mse, self.epoch, self.state = float("inf"), -1, None

    def offer(self, model: MatrixFactorization, mse: float, epoch: int) -> None:
        if mse < self.mse:
            self.mse, self.epoch, self.state = mse, epoch, model.state()


class RatingMFLearner(CentralLearner):
    """One MF trained on ``split.train`` (optionally with a parameter perturbation: AT, RAT)."""

    def __init__(self, split: RatingSplit, config: MFConfig, seed: int, perturbation: Perturbation | None = None):
        self.split, self.perturbation = split, perturbation
        self.model = MatrixFactorization(split.num_users, split.num_items, config, torch.Generator().manual_seed(seed))
        self.best = BestValidation()
        self.epoch = 0

    def shared_parameters(self) -> Parameters:
        return {ITEM_FACTORS: self.model.item_factors.detach().clone()}

    def load_shared_parameters(self, theta: Parameters) -> None:
        with torch.no_grad():
            self.model.item_factors.copy_(theta[ITEM_FACTORS])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.epoch = epoch
        return {"train_loss": self.model.train_epoch(self.split.train, self.perturbation)}

    def evaluate(self) -> dict[str, float]:
        mse = self.model.mse(self.split.valid)
        self.best.offer(self.model, mse, self.epoch)
        return {"valid_mse": mse}

    def finish(self) -> None:
        if self.best.state is not None:
            self.model.load_state(self.best.state)

    def final_model(self) -> MatrixFactorization:
        return self.model

"""The central-mode harness: one client trains a learner an epoch per round through Flower."""

from __future__ import annotations

import torch

from central.app import train_central
from central.learner import CentralLearner, Parameters


class TinyMF(CentralLearner):
    """Full-batch MF on a fixed low-rank matrix; Θ = item factors, users stay local."""

    def __init__(self, poison_epoch: int = 0) -> None:
        g = torch.Generator().manual_seed(0)
        self.target = torch.randn(30, 2, generator=g) @ torch.randn(2, 20, generator=g)
        self.users = torch.randn(30, 4, generator=g).requires_grad_()
        self.items = torch.randn(20, 4, generator=g).requires_grad_()
        self.optimizer = torch.optim.Adam([self.users, self.items], lr=0.05)
        self.poison_epoch = poison_epoch
        self.loaded: list[Parameters] = []

    def shared_parameters(self) -> Parameters:
        return {"item_factors": self.items.detach().clone()}

    def load_shared_parameters(self, theta: Parameters) -> None:
        self.loaded.append(theta)
        with torch.no_grad():
            self.items.copy_(theta["item_factors"])

    def _loss(self) -> torch.Tensor:
        return ((self.users @ self.items.T - self.target) ** 2).mean()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        for _ in range(20):
            self.optimizer.zero_grad()
            loss = self._loss()
            loss.backward()
            self.optimizer.step()
        if epoch == self.poison_epoch:
            with torch.no_grad():
                self.items[0, 0] = float("nan")
        return {"train/loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            return {"mse": float(self._loss())}


def test_training_runs_an_epoch_per_round_and_the_server_holds_theta():
    learner = TinyMF()
    seen = []
    history = train_central(learner, 5, on_epoch=seen.append)
    assert [row["epoch"] for row in history] == [0, 1, 2, 3, 4, 5, -1]
    assert seen == history[:-1]
    assert history[5]["mse"] < 0.5 * history[0]["mse"]
    assert history[-1]["mse"] == history[5]["mse"] and history[-1]["rejected_uploads"] == 0
    # Every round starts from exactly the Θ the server adopted from the previous round.
    torch.testing.assert_close(learner.loaded[-1]["item_factors"], learner.items.detach())


def test_a_non_finite_upload_is_rejected_and_theta_is_kept():
    learner = TinyMF(poison_epoch=2)
    history = train_central(learner, 3, evaluate_every=10)
    assert history[-1]["rejected_uploads"] == 1
    assert "mse" not in history[1] and "mse" in history[3]  # evaluated at the last epoch only
    assert torch.isfinite(learner.items).all()  # the learner was handed back the server's finite Θ

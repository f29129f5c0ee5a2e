"""A ``CentralLearner`` that trains a top-K recommender (or a clone) with a given objective.

The learner is the one client of the central mode: it keeps the user-side parameters and the
Adam state; Θ is the item side (``shared_parameter_names``). One round = one epoch of
mini-batches from the objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from central.app import train_central
from central.learner import CentralLearner, Parameters
from central.objectives import Objective
from recsys.models.ranking import shared_parameter_names

LEARNING_RATE = 0.001  # the paper's Adam learning rate (appendix A.1.4)


class RankingLearner(CentralLearner):
    """Adam on ``module``'s parameters against ``objective``; ``evaluator`` gives scalar metrics."""

    def __init__(self, module: torch.nn.Module, objective: Objective, generator: torch.Generator,
                 lr: float = LEARNING_RATE, evaluator: Callable[[], dict[str, float]] | None = None) -> None:
        self.module, self.objective, self.generator, self.evaluator = module, objective, generator, evaluator
        self.names = shared_parameter_names(module)
        self.parameters = dict(module.named_parameters())
        self.optimizer = torch.optim.Adam(self.parameters.values(), lr=lr)

    def shared_parameters(self) -> Parameters:
        return {name: self.parameters[name].detach().clone() for name in self.names}

    def load_shared_parameters(self, theta: Parameters) -> None:
        with torch.no_grad():
            for name in self.names:
                self.parameters[name].copy_(theta[name])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in self.objective.batches(self.generator):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.objective.loss(self.module, batch)
            loss.backward()
            self.optimizer.step()
            total, count = total + loss.item(), count + 1
        return {"train/loss": total / max(count, 1)}

    def evaluate(self) -> dict[str, float]:
        return self.evaluator() if self.evaluator is not None else {}


def fit(module: torch.nn.Module, objective: Objective, epochs: int, seed: int,
        evaluator: Callable[[], dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Train ``module`` in place for ``epochs`` central-mode rounds; return the history rows."""
    learner = RankingLearner(module, objective, torch.Generator().manual_seed(seed), evaluator=evaluator)
    return train_central(learner, epochs, evaluate_every=max(epochs, 1))

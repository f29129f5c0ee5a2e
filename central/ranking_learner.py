"""A ``CentralLearner`` that trains a top-K recommender (or a clone) with a given objective, and
``train_native``: any ``RankingModel`` trained the way it is trained as a victim or target.

The learner is the one client of the central mode: it keeps the user-side parameters and the
Adam state; Θ is the item side (``shared_parameter_names``). One round = one epoch: mini-batches
from the objective (after the model's ``begin_epoch``), or one ALS sweep for ALS models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from central.app import train_central
from central.learner import CentralLearner, Parameters
from central.objectives import BATCH_SIZE, Batch, InteractionObjective, Objective
from recsys.data.dataset import Interactions
from recsys.models.base import RankingModel, shared_parameter_names

LEARNING_RATE = 0.001  # the paper's Adam learning rate (appendix A.1.4)


class RankingLearner(CentralLearner):
    """Adam on ``module``'s parameters against ``objective`` (or ALS sweeps when ``objective`` is
    None and the module has ``als_sweep``); ``evaluator`` gives scalar metrics."""

    def __init__(self, module: torch.nn.Module, objective: Objective | None, generator: torch.Generator,
                 lr: float = LEARNING_RATE, evaluator: Callable[[], dict[str, float]] | None = None,
                 weight_decay: float = 0.0) -> None:
        if objective is None and not hasattr(module, "als_sweep"):
            raise ValueError(f"{type(module).__name__} needs an objective (it has no closed-form sweep)")
        self.module, self.objective, self.generator, self.evaluator = module, objective, generator, evaluator
        self.names = shared_parameter_names(module)
        self.parameters = dict(module.named_parameters())
        self.optimizer = (torch.optim.Adam(self.parameters.values(), lr=lr, weight_decay=weight_decay)
                          if objective is not None else None)

    def shared_parameters(self) -> Parameters:
        return {name: self.parameters[name].detach().clone() for name in self.names}

    def load_shared_parameters(self, theta: Parameters) -> None:
        with torch.no_grad():
            for name in self.names:
                self.parameters[name].copy_(theta[name])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        if self.objective is None:
            return self.module.als_sweep()
        if isinstance(self.module, RankingModel):
            self.module.begin_epoch(self.generator)
        total, count = 0.0, 0
        device = next(iter(self.parameters.values())).device
        for batch in self.objective.batches(self.generator):  # drawn on the CPU: the same batches on every device
            batch = tuple(part.to(device) for part in batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.objective.loss(self.module, batch)
            loss.backward()
            self.optimizer.step()
            total, count = total + loss.item(), count + 1
        return {"train/loss": total / max(count, 1)}

    def evaluate(self) -> dict[str, float]:
        return self.evaluator() if self.evaluator is not None else {}


def fit(module: torch.nn.Module, objective: Objective | None, epochs: int, seed: int,
        evaluator: Callable[[], dict[str, float]] | None = None, lr: float = LEARNING_RATE,
        weight_decay: float = 0.0) -> list[dict[str, float]]:
    """Train ``module`` in place for ``epochs`` central-mode rounds; return the history rows."""
    learner = RankingLearner(module, objective, torch.Generator().manual_seed(seed), lr=lr, evaluator=evaluator,
                             weight_decay=weight_decay)
    return train_central(learner, epochs, evaluate_every=max(epochs, 1))


class ModelObjective(InteractionObjective):
    """The interaction batches of ``InteractionObjective`` scored by the model's own ``training_loss``."""

    def loss(self, scorer: RankingModel, batch: Batch) -> torch.Tensor:
        return scorer.training_loss(*batch)


class RowObjective:
    """Every user once per epoch, in shuffled batches of ``batch_size`` users, scored by the model's own
    ``row_loss`` of their whole rows."""

    def __init__(self, num_users: int, batch_size: int) -> None:
        self.num_users, self.batch_size = num_users, batch_size

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        yield from ((users,) for users in torch.randperm(self.num_users, generator=generator).split(self.batch_size))

    def loss(self, scorer: RankingModel, batch: Batch) -> torch.Tensor:
        return scorer.row_loss(*batch)


@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained natively: epochs (ALS sweeps for ALS models), Adam's learning rate,
    the batch size (observed pairs, or users for row losses), sampled negatives per observed pair and
    Adam's L2 weight decay."""

    epochs: int
    lr: float = LEARNING_RATE
    batch_size: int = BATCH_SIZE
    negatives: int = 1
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.negatives < 1 or self.weight_decay < 0:
            raise ValueError(f"invalid training settings {self}")


def native_objective(model: RankingModel, train: Interactions, settings: TrainSettings) -> Objective | None:
    """The objective ``model`` is trained with (None for closed-form ALS)."""
    if model.native_loss == "als":
        return None
    if model.native_loss == "rows":
        return RowObjective(train.num_users, settings.batch_size)
    if model.native_loss == "model":
        return ModelObjective(train, model.num_items, "bpr", settings.negatives, settings.batch_size)
    return InteractionObjective(train, model.num_items, model.native_loss, settings.negatives, settings.batch_size)


def train_native(model: RankingModel, train: Interactions, settings: TrainSettings, seed: int,
                 evaluator: Callable[[], dict[str, float]] | None = None) -> list[dict[str, float]]:
    """Bind ``train`` to ``model`` and train it in central mode with its native objective."""
    model.bind(train)
    return fit(model, native_objective(model, train, settings), settings.epochs, seed, evaluator, settings.lr,
               settings.weight_decay)

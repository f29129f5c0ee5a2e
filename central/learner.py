"""The interface of a centralized recommender trained in central mode.

A learner is the one client of a central-mode federation: it holds every user, the user-side
parameters and its optimiser state; the server holds Θ (the shared, item-side parameters)
and receives them back after every round. A round is one epoch of local training.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

Parameters = dict[str, torch.Tensor]


class CentralLearner(ABC):
    """A model plus its training data and loop, driven one epoch per round by the ServerApp."""

    @abstractmethod
    def shared_parameters(self) -> Parameters:
        """Θ: the tensors the server holds (item side), by name. Shapes and dtypes never change."""

    @abstractmethod
    def load_shared_parameters(self, theta: Parameters) -> None:
        """Adopt Θ as sent by the server (copy it: the caller may reuse the tensors)."""

    @abstractmethod
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch (``epoch`` counts from 1); return scalar metrics such as the loss."""

    def evaluate(self) -> dict[str, float]:
        """Scalar metrics of the current model (default: none)."""
        return {}

    def finish(self) -> None:
        """Called after the last round (e.g. to restore the epoch of best validation loss)."""

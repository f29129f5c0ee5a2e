"""The federated NCF trained centrally: one ``NCF`` (``recsys.models.ranking``, the Θ layout, forward and
batched scoring of ``recsys.models.ncf``) holding every user's embedding as a matrix, trained on all users'
interactions in central mode (``central.app.train_central``: Adam, mini-batches, binary cross-entropy of each
observed pair against ``negatives`` unobserved items drawn afresh every epoch), and measured by the one
evaluation path of the federated shards (``recsys.metrics.ncf_rank_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from central.app import train_central
from central.ranking_learner import RankingLearner, TrainSettings, native_objective
from recsys.data.dataset import Interactions
from recsys.metrics import ncf_rank_metrics
from recsys.models.ncf import NCFSpec
from recsys.models.ranking import NCF


@dataclass(frozen=True)
class Evaluation:
    """What the central model is measured on: the real users' train (masked) and test lists (rows 0..N-1 of the
    model), the targets, K and the ER@K cut-offs."""

    train: Interactions
    test: Interactions
    targets: np.ndarray
    k: int
    er_ks: tuple[int, ...]

    def __call__(self, model: NCF) -> dict[str, float]:
        users = self.train.num_users
        sums = ncf_rank_metrics(model.user_emb[:users].detach(), model.theta(), model.spec.num_linear, self.train,
                                self.test, torch.as_tensor(self.targets, dtype=torch.int64), self.k, self.er_ks)
        return sums.finalize(self.k, self.er_ks)


def train_central_ncf(train: Interactions, spec: NCFSpec, settings: TrainSettings, seed: int,
                      evaluation: Evaluation | None = None,
                      on_epoch: Callable[[dict[str, float]], None] | None = None) -> tuple[NCF, list[dict[str, float]]]:
    """Train an NCF of shape ``spec`` on ``train`` (one user per row: real users first, injected fake users after)
    from seed ``seed`` with Adam (``settings``: epochs, learning rate, batch size, r negatives per observed pair);
    return the model and the history (epoch 0, every epoch, ``evaluation`` after each)."""
    generator = torch.Generator().manual_seed(seed)
    model = NCF(train.num_users, spec.num_items, spec.dim, generator, layers=spec.layers)
    model.bind(train)
    objective = native_objective(model, train, settings)
    evaluator = (lambda: evaluation(model)) if evaluation is not None else None
    learner = RankingLearner(model, objective, generator, lr=settings.lr, evaluator=evaluator)
    history = train_central(learner, settings.epochs, on_epoch=on_epoch)
    return model, [row for row in history if row["epoch"] >= 0]

"""Triple Cooperative Defense (TCD, Algorithm 1 of Wang et al.): three MFs h_0, h_1, h_2.

All three are pre-trained on the labelled data D_L for T_pre epochs; afterwards, in every epoch
and for j = 0, 1, 2 in turn, h_j is trained on D_L ∪ {(u, i, Π(ĥ_{j+1}(u, i)))} over the
unlabelled pairs (u, i) ∉ D_L where Π(ĥ_{j+1 mod 3}) = Π(ĥ_{j+2 mod 3}), Π projecting a
prediction onto the rating grid. A pseudo-label rate < 1 keeps each agreed pair with that
probability. h_0 is the deployed model, kept at its epoch of smallest validation MSE.
"""

from __future__ import annotations

import torch

from central.learner import CentralLearner, Parameters
from central.rating_mf import ITEM_FACTORS, BestValidation, MatrixFactorization, MFConfig
from central.rating_split import RatingGrid, RatingSplit, RatingTriples

MODELS = 3
PRETRAIN_EPOCHS = {"filmtrust": 1, "ml-100k": 4, "ml-1m": 2}  # T_pre of the paper
PSEUDO_LABEL_RATE = {"ml-1m": 0.2}  # 1.0 elsewhere


def agreed_pseudo_labels(first: torch.Tensor, second: torch.Tensor, labelled: torch.Tensor, grid: RatingGrid,
                         rate: float = 1.0, generator: torch.Generator | None = None) -> RatingTriples:
    """The unlabelled pairs where Π(first) = Π(second), labelled Π(first) (a ``rate`` share of them)."""
    level = grid.level(first)
    agree = (level == grid.level(second)) & ~labelled
    if rate < 1.0:
        agree &= torch.rand(agree.shape, generator=generator) < rate
    users, items = agree.nonzero(as_tuple=True)
    values = (grid.low + level[users, items].to(torch.float32) * grid.step) / grid.high
    return RatingTriples(users, items, values)


class TripleCooperativeLearner(CentralLearner):
    """TCD as one central-mode learner; Θ holds the item factors of all three models."""

    def __init__(self, split: RatingSplit, config: MFConfig, seed: int, pretrain_epochs: int,
                 pseudo_label_rate: float = 1.0) -> None:
        if pretrain_epochs < 0 or not 0.0 <= pseudo_label_rate <= 1.0:
            raise ValueError(f"pretrain_epochs must be >= 0 and pseudo_label_rate in [0, 1], got "
                             f"{pretrain_epochs} and {pseudo_label_rate}")
        self.split, self.pretrain_epochs, self.rate = split, pretrain_epochs, pseudo_label_rate
        self.models = [MatrixFactorization(split.num_users, split.num_items, config,
                                           torch.Generator().manual_seed(seed * MODELS + k)) for k in range(MODELS)]
        self.generator = torch.Generator().manual_seed(seed + 10_007)
        self.labelled = split.rated_mask(include_eval=False)
        self.best = BestValidation()
        self.epoch = 0
        self.pseudo_labels = 0.0

    def shared_parameters(self) -> Parameters:
        return {f"{ITEM_FACTORS}_{k}": model.item_factors.detach().clone() for k, model in enumerate(self.models)}

    def load_shared_parameters(self, theta: Parameters) -> None:
        with torch.no_grad():
            for k, model in enumerate(self.models):
                model.item_factors.copy_(theta[f"{ITEM_FACTORS}_{k}"])

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.epoch = epoch
        losses, counts = [], []
        for j, model in enumerate(self.models):
            data = self.split.train
            if epoch > self.pretrain_epochs:
                extra = agreed_pseudo_labels(self.models[(j + 1) % MODELS].scores(),
                                             self.models[(j + 2) % MODELS].scores(),
                                             self.labelled, self.split.grid, self.rate, self.generator)
                data = data.concat(extra)
                counts.append(len(extra))
            losses.append(model.train_epoch(data))
        self.pseudo_labels = sum(counts) / MODELS if counts else 0.0
        return {"train_loss": losses[0], "pseudo_labels": self.pseudo_labels}

    def evaluate(self) -> dict[str, float]:
        mse = self.models[0].mse(self.split.valid)
        self.best.offer(self.models[0], mse, self.epoch)
        return {"valid_mse": mse}

    def finish(self) -> None:
        if self.best.state is not None:
            self.models[0].load_state(self.best.state)

    def final_model(self) -> MatrixFactorization:
        return self.models[0]

"""Triple Cooperative Defense (TCD, Algorithm 1 of Wang et al.): three MFs h_0, h_1, h_2.

All three are pre-trained on the labelled data D_L for T_pre epochs; afterwards, in every epoch
and for j = 0, 1, 2 in turn, h_j is trained on D_L ∪ {(u, i, Π(ĥ_{j+1}(u, i)))} over the
unlabelled pairs (u, i) ∉ D_L where Π(ĥ_{j+1 mod 3}) = Π(ĥ_{j+2 mod 3}), Π rounding a
prediction to the nearest rating of the grid. A pseudo-label rate < 1 keeps each agreed pair
with that probability. h_0 is the deployed model: at its epoch of smallest validation MSE (the
paper) or after the last epoch (the authors' FilmTrust scripts).

Π comes in three variants (``PROJECTIONS``), which differ only off the rating scale:

- ``clamped``: the rounded rating is clipped to the scale, so a prediction far below the lowest
  rating is labelled the lowest rating;
- ``zero-below``: rounded without clipping (the authors' ``models/co_SVD.py``); a label below the
  lowest rating becomes 0, one above the highest stays as rounded;
- ``authors``: as ``zero-below``, and a label at or above the highest rating also becomes 0 (the
  authors' FilmTrust scripts in their repository's ``.history/`` folder).

In the unclipped variants two models agree when their unclipped rounded ratings are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from central.learner import CentralLearner, Parameters
from central.rating_mf import ITEM_FACTORS, BestValidation, MatrixFactorization, MFConfig
from central.rating_split import RatingGrid, RatingSplit, RatingTriples

MODELS = 3
PROJECTIONS = ("clamped", "zero-below", "authors")
REPORTED = ("best", "final")  # the deployed h_0: smallest validation MSE, or the last epoch


@dataclass(frozen=True)
class TCDSettings:
    """T_pre, Π, which h_0 is reported, and the share of agreed pairs kept as pseudo-labels."""

    pretrain_epochs: int
    projection: str = "authors"
    reported: str = "best"
    pseudo_label_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.pretrain_epochs < 0 or not 0.0 <= self.pseudo_label_rate <= 1.0:
            raise ValueError(f"pretrain_epochs must be >= 0 and pseudo_label_rate in [0, 1], got "
                             f"{self.pretrain_epochs} and {self.pseudo_label_rate}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {', '.join(PROJECTIONS)}")
        if self.reported not in REPORTED:
            raise ValueError(f"unknown reported model {self.reported!r}; choose one of {', '.join(REPORTED)}")


# Per dataset: on ML-100K / ML-1M the paper's settings (T_pre 4 / 2, ML-1M pseudo-label rate 0.2,
# the smallest-validation-MSE model) with Π clipped to the scale, which reproduces the paper's ML-100K
# tables; on FilmTrust the authors' script settings (Π ``authors``, T_pre 6, the last-epoch model),
# without which TCD raises the targets there (docs/central-poisoning.md).
DEFAULT_SETTINGS = {
    "filmtrust": TCDSettings(pretrain_epochs=6, projection="authors", reported="final"),
    "ml-100k": TCDSettings(pretrain_epochs=4, projection="clamped"),
    "ml-1m": TCDSettings(pretrain_epochs=2, projection="clamped", pseudo_label_rate=0.2),
}


def tcd_settings(dataset: str, **overrides) -> TCDSettings:
    """The dataset's default settings (T_pre 1, Π clamped for an unknown dataset) with ``overrides``
    (None = keep)."""
    base = DEFAULT_SETTINGS.get(dataset, TCDSettings(pretrain_epochs=1, projection="clamped"))
    return replace(base, **{name: value for name, value in overrides.items() if value is not None})


def pseudo_label_values(levels: torch.Tensor, grid: RatingGrid, projection: str) -> torch.Tensor:
    """Π's normalised labels of unclipped grid ``levels`` (``RatingGrid.raw_level``) under ``projection``."""
    if projection == "clamped":
        return grid.level_value(levels.clamp(0, grid.levels - 1))
    values = grid.level_value(levels)
    zero = levels < 0
    if projection == "authors":
        zero |= levels >= grid.levels - 1
    return values.masked_fill_(zero, 0.0)


def agreed_pseudo_labels(first: torch.Tensor, second: torch.Tensor, labelled: torch.Tensor, grid: RatingGrid,
                         projection: str = "authors", rate: float = 1.0,
                         generator: torch.Generator | None = None) -> RatingTriples:
    """The unlabelled pairs where Π(first) = Π(second), labelled Π(first) (a ``rate`` share of them)."""
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    levels = grid.level if projection == "clamped" else grid.raw_level
    level = levels(first)
    agree = (level == levels(second)) & ~labelled
    if rate < 1.0:
        agree &= torch.rand(agree.shape, generator=generator) < rate
    users, items = agree.nonzero(as_tuple=True)
    return RatingTriples(users, items, pseudo_label_values(level[users, items], grid, projection))


class TripleCooperativeLearner(CentralLearner):
    """TCD as one central-mode learner; Θ holds the item factors of all three models."""

    def __init__(self, split: RatingSplit, config: MFConfig, seed: int, settings: TCDSettings) -> None:
        self.split, self.settings = split, settings
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
            if epoch > self.settings.pretrain_epochs:
                extra = agreed_pseudo_labels(self.models[(j + 1) % MODELS].scores(),
                                             self.models[(j + 2) % MODELS].scores(), self.labelled,
                                             self.split.grid, self.settings.projection,
                                             self.settings.pseudo_label_rate, self.generator)
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
        if self.settings.reported == "best" and self.best.state is not None:
            self.models[0].load_state(self.best.state)

    def final_model(self) -> MatrixFactorization:
        return self.models[0]

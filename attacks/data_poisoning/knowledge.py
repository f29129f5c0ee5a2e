"""What a low-knowledge attacker knows: a fraction (the knowledge cost) of the training ratings,
their statistics, and a surrogate MF trained on that fraction in central mode."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from central.app import train_central
from central.rating_mf import MatrixFactorization, MFConfig, RatingMFLearner
from central.rating_split import RatingGrid, RatingSplit, RatingTriples


@dataclass
class AttackerKnowledge:
    """The known ratings (raw scale), the item count, the grid, and a lazily trained surrogate."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    num_users: int
    num_items: int
    grid: RatingGrid
    mf_config: MFConfig
    seed: int
    _surrogate: MatrixFactorization | None = field(default=None, repr=False)

    @classmethod
    def sample(cls, split: RatingSplit, cost: float, seed: int, mf_config: MFConfig = MFConfig()) -> AttackerKnowledge:
        """Know a random ``cost`` fraction of the real users' training ratings."""
        if not 0.0 < cost <= 1.0:
            raise ValueError(f"knowledge cost must be in (0, 1], got {cost}")
        rng = np.random.default_rng(seed)
        count = max(1, int(round(cost * len(split.train))))
        rows = np.sort(rng.choice(len(split.train), size=count, replace=False))
        users, items = split.train.users.numpy()[rows], split.train.items.numpy()[rows]
        ratings = split.grid.denormalise(split.train.values.numpy()[rows]).astype(np.float32)
        return cls(users, items, ratings, split.num_users, split.num_items, split.grid, mf_config, seed)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.num_items)

    def rating_matrix(self) -> np.ndarray:
        """Dense [num_users, num_items] known ratings, 0 where unknown."""
        matrix = np.zeros((self.num_users, self.num_items), dtype=np.float32)
        matrix[self.users, self.items] = self.ratings
        return matrix

    def item_mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-item mean and std of the known ratings; the global ones where an item has < 2 ratings."""
        counts = self.item_counts()
        sums = np.bincount(self.items, weights=self.ratings, minlength=self.num_items)
        squares = np.bincount(self.items, weights=self.ratings.astype(np.float64) ** 2, minlength=self.num_items)
        enough = counts >= 2
        mean = np.full(self.num_items, self.ratings.mean())
        std = np.full(self.num_items, self.ratings.std())
        mean[enough] = sums[enough] / counts[enough]
        std[enough] = np.sqrt(np.maximum(squares[enough] / counts[enough] - mean[enough] ** 2, 0.0))
        return mean, std

    def surrogate(self) -> MatrixFactorization:
        """The attacker's MF, trained (in central mode) on a 9:1 split of the known ratings."""
        if self._surrogate is None:
            rng = np.random.default_rng(self.seed + 1)
            order = rng.permutation(len(self.ratings))
            cut = int(round(0.9 * len(order)))
            known = RatingTriples.from_numpy(self.users, self.items, self.grid.normalise(self.ratings))
            split = RatingSplit(self.num_users, self.num_items, self.num_users, known.subset(order[:cut]),
                                known.subset(order[cut:]), known.subset(order[:0]), self.grid)
            learner = RatingMFLearner(split, self.mf_config, self.seed + 2)
            train_central(learner, self.mf_config.epochs)
            self._surrogate = learner.final_model()
        return self._surrogate

    def torch_generator(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 7919 + salt)

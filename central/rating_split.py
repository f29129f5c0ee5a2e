"""The explicit-rating split of the TCD paper: per user one rated item held out for test, the
remaining ratings split 9:1 into train and validation; ratings normalised by the scale's maximum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys.data.dataset import Ratings


@dataclass(frozen=True)
class RatingTriples:
    """(user, item, normalised rating) triples as tensors."""

    users: torch.Tensor  # int64
    items: torch.Tensor  # int64
    values: torch.Tensor  # float32 in (0, 1]

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_numpy(cls, users: np.ndarray, items: np.ndarray, values: np.ndarray) -> RatingTriples:
        return cls(torch.as_tensor(users, dtype=torch.int64), torch.as_tensor(items, dtype=torch.int64),
                   torch.as_tensor(values, dtype=torch.float32))

    def concat(self, other: RatingTriples) -> RatingTriples:
        return RatingTriples(torch.cat((self.users, other.users)), torch.cat((self.items, other.items)),
                             torch.cat((self.values, other.values)))

    def subset(self, index: torch.Tensor | np.ndarray) -> RatingTriples:
        index = torch.as_tensor(index, dtype=torch.int64)
        return RatingTriples(self.users[index], self.items[index], self.values[index])


@dataclass(frozen=True)
class RatingGrid:
    """The rating scale: ratings are ``low, low + step, ..., high``; the model sees ``rating / high``."""

    low: float
    high: float
    step: float

    @property
    def levels(self) -> int:
        return int(round((self.high - self.low) / self.step)) + 1

    def normalise(self, ratings: np.ndarray | torch.Tensor):
        return ratings / self.high

    def denormalise(self, values: np.ndarray | torch.Tensor):
        return values * self.high

    def raw_level(self, values: torch.Tensor) -> torch.Tensor:
        """The nearest rating level of normalised ``values`` on the grid extended past the scale
        (negative below the lowest rating, ``>= levels`` above the highest)."""
        return torch.round((values * self.high - self.low) / self.step).to(torch.int64)

    def level(self, values: torch.Tensor) -> torch.Tensor:
        """Π as a grid index: the nearest rating level of normalised ``values`` (clipped to the scale)."""
        return self.raw_level(values).clamp_(0, self.levels - 1)

    def level_value(self, levels: torch.Tensor) -> torch.Tensor:
        """The normalised rating of (possibly out-of-scale) grid ``levels``."""
        return (self.low + levels.to(torch.float32) * self.step) / self.high

    def project(self, values: torch.Tensor) -> torch.Tensor:
        """Π: normalised values mapped to the nearest normalised rating of the grid."""
        return self.level_value(self.level(values)).to(values.dtype)

    def snap(self, ratings: np.ndarray) -> np.ndarray:
        """Raw ratings rounded to the grid and clipped to the scale."""
        snapped = self.low + np.round((ratings - self.low) / self.step) * self.step
        return np.clip(snapped, self.low, self.high).astype(np.float32)


@dataclass(frozen=True)
class RatingSplit:
    """Train / validation / test triples of ``num_users`` users (real ones first) and ``num_items`` items."""

    num_users: int
    num_items: int
    num_real_users: int
    train: RatingTriples
    valid: RatingTriples
    test: RatingTriples  # one per real user
    grid: RatingGrid

    def rated_mask(self, include_eval: bool = True) -> torch.Tensor:
        """Bool [num_users, num_items]: the pairs in train (and, by default, validation and test)."""
        mask = torch.zeros(self.num_users, self.num_items, dtype=torch.bool)
        parts = (self.train, self.valid, self.test) if include_eval else (self.train,)
        for part in parts:
            mask[part.users, part.items] = True
        return mask

    def with_extra_users(self, extra: RatingTriples, count: int) -> RatingSplit:
        """The split with ``count`` more users (ids ``num_users ...``) whose ``extra`` ratings join train."""
        return RatingSplit(self.num_users + count, self.num_items, self.num_real_users, self.train.concat(extra),
                           self.valid, self.test, self.grid)


def split_ratings(ratings: Ratings, num_users: int, num_items: int, seed: int,
                  valid_fraction: float = 0.1) -> RatingSplit:
    """Hold out one random rating per user for test; split the rest ``1 - valid_fraction : valid_fraction``."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    counts = np.bincount(ratings.users, minlength=num_users)
    if counts.min(initial=2) < 2:
        raise ValueError(f"every user needs >= 2 ratings for a test hold-out; user {int(counts.argmin())} has "
                         f"{int(counts.min())}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(ratings.users)), ratings.users))  # per user, random order
    first = np.zeros(len(order), dtype=bool)
    first[np.concatenate(([0], np.cumsum(counts)[:-1]))] = True
    test_rows, rest = order[first], order[~first]
    rest = rest[rng.permutation(len(rest))]
    cut = int(round(len(rest) * (1.0 - valid_fraction)))
    grid = RatingGrid(float(ratings.scale[0]), float(ratings.scale[1]), float(ratings.step))

    def triples(rows: np.ndarray) -> RatingTriples:
        return RatingTriples.from_numpy(ratings.users[rows], ratings.items[rows], grid.normalise(ratings.values[rows]))

    return RatingSplit(num_users, num_items, num_users, triples(rest[:cut]), triples(rest[cut:]),
                       triples(test_rows), grid)

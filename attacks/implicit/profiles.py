"""Implicit fake profiles (interaction lists of fake users) and the setting every implicit attack
gets: the real training lists, the targets, the number of fake users and their budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.atomic import atomic_path
from recsys.data.dataset import Interactions


@dataclass(frozen=True)
class PoisonSetting:
    """What an implicit attack knows and may do: the real users' training lists (white box, as in
    RevAdv), the item count, the targets, ``num_fake`` fake users of at most ``budget`` items each
    (targets included)."""

    train: Interactions
    num_items: int
    targets: np.ndarray
    num_fake: int
    budget: int

    def __post_init__(self) -> None:
        targets = np.asarray(self.targets)
        if len(targets) == 0 or len(np.unique(targets)) != len(targets) or targets.min() < 0 \
                or targets.max() >= self.num_items:
            raise ValueError(f"targets must be distinct item ids in [0, {self.num_items}), got {targets.tolist()}")
        if self.num_fake < 1 or not len(targets) <= self.budget <= self.num_items:
            raise ValueError(f"need >= 1 fake user and a budget in [{len(targets)}, {self.num_items}], "
                             f"got {self.num_fake} and {self.budget}")

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.train.items, minlength=self.num_items)

    def real_floor(self) -> int:
        """The number of training items of the shortest real user."""
        return int(self.train.lengths().min())


@dataclass(frozen=True)
class FakeProfiles:
    """Item lists of ``lists.num_users`` fake users, each of at most ``budget`` distinct items."""

    lists: Interactions
    budget: int

    def __post_init__(self) -> None:
        if self.lists.num_users and self.lists.lengths().max() > self.budget:
            raise ValueError(f"a fake profile holds {self.lists.lengths().max()} items, over the budget {self.budget}")

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, budget: int) -> FakeProfiles:
        """Profiles of the non-zero entries of a [num_fake, M] matrix."""
        rows, cols = torch.nonzero(matrix, as_tuple=True)
        return cls(Interactions.from_pairs(rows.numpy(), cols.numpy(), matrix.shape[0]), budget)

    @classmethod
    def from_rows(cls, items: np.ndarray, budget: int) -> FakeProfiles:
        """Profiles from a [num_fake, budget] array of item ids."""
        return cls(Interactions.from_lists(items.tolist()), budget)

    def share_below(self, floor: int) -> float:
        """Share of the fake users holding fewer than ``floor`` items: with ``floor`` the shortest real user's
        length, those a filter on the number of interactions drops without dropping a real user."""
        return float((self.lists.lengths() < floor).mean())

    def matrix(self, num_items: int) -> torch.Tensor:
        out = torch.zeros(self.lists.num_users, num_items)
        out[torch.from_numpy(self.lists.row_ids()), torch.from_numpy(self.lists.items)] = 1.0
        return out

    def inject(self, real: Interactions) -> Interactions:
        """The real lists followed by the fake users' lists (fake user f = row real.num_users + f)."""
        return Interactions(np.concatenate((real.indptr, real.indptr[-1] + self.lists.indptr[1:])),
                            np.concatenate((real.items, self.lists.items)))

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, tmp.open("wb") as handle:  # a handle: np.savez would append ".npz" to a name
            np.savez(handle, indptr=self.lists.indptr, items=self.lists.items, budget=self.budget)

    @classmethod
    def load(cls, path: Path) -> FakeProfiles:
        with np.load(path) as data:
            return cls(Interactions(data["indptr"], data["items"]), int(data["budget"]))

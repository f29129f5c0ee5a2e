"""Data of the model-stealing setting: the target/auxiliary user split, the query oracle, and
the attacker's view (the only door through which an attack reads anything).

* Users and items with fewer than ``MIN_INTERACTIONS`` interactions (train + test) are removed,
  repeatedly until none is left.
* Users are split at random (seeded) into two disjoint halves sharing the item set: the target
  half (its train lists train the target model, its test lists measure Recall) and the
  auxiliary half (all its interactions are the attacker's auxiliary data).
* The attacker knows ``attacker_fraction`` of the target users (seeded, by user): their train
  lists, and it may query the target model for their ordered top-K lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from central.objectives import interaction_mask
from recsys.data.dataset import Dataset, Interactions
from recsys.models.ranking import recommend

MIN_INTERACTIONS = 5


@dataclass(frozen=True)
class StealingSplit:
    """The filtered data split into a target half and an auxiliary half (users local to each)."""

    num_items: int
    target_train: Interactions
    target_test: Interactions
    auxiliary: Interactions
    attacker_users: np.ndarray  # indices of target-half users known to the attacker, sorted

    @classmethod
    def from_dataset(cls, dataset: Dataset, seed: int, attacker_fraction: float = 0.1) -> StealingSplit:
        if not 0.0 < attacker_fraction <= 1.0:
            raise ValueError(f"attacker_fraction must be in (0, 1], got {attacker_fraction}")
        train, test, num_items = filter_sparse(dataset.train, dataset.test, dataset.num_items)
        rng = np.random.default_rng(seed)
        users = rng.permutation(train.num_users)
        target, auxiliary = np.sort(users[: len(users) // 2]), np.sort(users[len(users) // 2 :])
        known = max(1, round(attacker_fraction * len(target)))
        attacker_users = np.sort(rng.permutation(len(target))[:known])
        aux_train, aux_test = train.subset(auxiliary), test.subset(auxiliary)
        aux_all = Interactions.from_pairs(np.concatenate((aux_train.row_ids(), aux_test.row_ids())),
                                          np.concatenate((aux_train.items, aux_test.items)), len(auxiliary))
        return cls(num_items, train.subset(target), test.subset(target), aux_all, attacker_users)

    def item_popularity(self) -> np.ndarray:
        """Interactions per item in the target model's training data (what its owner can count)."""
        return np.bincount(self.target_train.items, minlength=self.num_items)


def filter_sparse(train: Interactions, test: Interactions, num_items: int,
                  minimum: int = MIN_INTERACTIONS) -> tuple[Interactions, Interactions, int]:
    """Drop users and items with < ``minimum`` interactions (train + test) until none is left;
    users and items are renumbered densely in their original order."""
    rows = np.concatenate((train.row_ids(), test.row_ids()))
    items = np.concatenate((train.items, test.items))
    is_test = np.arange(len(rows)) >= train.nnz
    keep = np.ones(len(rows), dtype=bool)
    while True:
        user_counts = np.bincount(rows[keep], minlength=train.num_users)
        item_counts = np.bincount(items[keep], minlength=num_items)
        dropping = keep & ((user_counts[rows] < minimum) | (item_counts[items] < minimum))
        if not dropping.any():
            break
        keep &= ~dropping
    user_ids = np.cumsum(np.bincount(rows[keep], minlength=train.num_users) > 0) - 1
    item_kept = np.bincount(items[keep], minlength=num_items) > 0
    item_ids = np.cumsum(item_kept) - 1
    num_users = int(user_ids[-1] + 1) if len(user_ids) else 0

    def part(mask: np.ndarray) -> Interactions:
        return Interactions.from_pairs(user_ids[rows[mask]], item_ids[items[mask]], num_users)

    return part(keep & ~is_test), part(keep & is_test), int(item_kept.sum())


class QueryOracle:
    """The deployed target model: the ordered top-K list of a user, excluding items it interacted with."""

    def __init__(self, model: torch.nn.Module, interactions: Interactions, num_items: int) -> None:
        self.model, self.num_items = model, num_items
        self.interacted = interaction_mask(interactions, num_items)

    def query(self, users: torch.Tensor, k: int) -> torch.Tensor:
        """Top-``k`` lists ([U, k], best first) of target-half ``users``."""
        return recommend(self.model, users, self.interacted[users], k)


class AttackerView:
    """What the attacker may read: its known target users' train lists, the auxiliary data and
    the query answers for its known users. Every read of target data is recorded by user."""

    def __init__(self, split: StealingSplit, oracle: QueryOracle) -> None:
        self._split, self._oracle = split, oracle
        self.known_users = torch.from_numpy(split.attacker_users)
        self.num_items = split.num_items
        self.read_target_users: set[int] = set()
        self.queried_users: set[int] = set()

    @property
    def num_known(self) -> int:
        return len(self.known_users)

    def target_data(self) -> Interactions:
        """Train lists of the known target users (row r = known user r)."""
        self.read_target_users.update(int(u) for u in self.known_users)
        return self._split.target_train.subset(self._split.attacker_users)

    def auxiliary_data(self) -> Interactions:
        return self._split.auxiliary

    def query(self, k: int) -> torch.Tensor:
        """The target model's top-``k`` lists for the known users (row r = known user r)."""
        self.queried_users.update(int(u) for u in self.known_users)
        return self._oracle.query(self.known_users, k)

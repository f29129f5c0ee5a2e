"""In-memory dataset types shared by every loader, the simulator and the central mode."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """Per-user item lists in CSR form: user ``u`` owns ``items[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # int64, shape (num_users + 1,)
    items: np.ndarray  # int64, shape (nnz,)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> Interactions:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = np.fromiter((i for x in lists for i in x), dtype=np.int64, count=int(indptr[-1]))
        return cls(indptr, items)

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, num_users: int) -> Interactions:
        """Group (user, item) pairs by user; each user keeps its pairs in the given order."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if np.any(users[1:] < users[:-1]):
            order = np.argsort(users, kind="stable")
            users, items = users[order], items[order]
        indptr = np.zeros(num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
        return cls(indptr, items)

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def user(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    def subset(self, users: np.ndarray) -> Interactions:
        """The rows of ``users`` (in that order) as a new CSR."""
        lengths = self.lengths()[users]
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        starts = np.repeat(self.indptr[users] - indptr[:-1], lengths)
        return Interactions(indptr, self.items[np.arange(indptr[-1]) + starts])

    def row_ids(self) -> np.ndarray:
        """The owning row of every entry of ``items``."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.lengths())


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings as parallel arrays (kept for the central mode)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    values: np.ndarray  # float32
    scale: tuple[float, float]  # (min, max) of the rating scale
    step: float  # grid step of the rating scale (1.0 for 1..5 stars)


@dataclass(frozen=True)
class Dataset:
    """An implicit-feedback train/test split, plus the explicit ratings when the source has them."""

    name: str
    num_users: int
    num_items: int
    train: Interactions
    test: Interactions
    ratings: Ratings | None = None
    notes: tuple[str, ...] = field(default=())  # what the loader cleaned, for the stats printout

    def item_popularity(self) -> np.ndarray:
        """Interactions per item over train and test (as the federated paper's code counts)."""
        counts = np.bincount(self.train.items, minlength=self.num_items)
        return counts + np.bincount(self.test.items, minlength=self.num_items)

    def least_popular_items(self, count: int) -> np.ndarray:
        """The ``count`` least popular items (ties broken by the smaller id)."""
        return np.argsort(self.item_popularity(), kind="stable")[:count]

    def describe(self) -> str:
        """Human-readable statistics, printed when a dataset is loaded."""
        tr, te = self.train.lengths(), self.test.lengths()
        total = self.train.nnz + self.test.nnz
        density = total / max(1, self.num_users * self.num_items)
        lines = [
            f"dataset {self.name}: {self.num_users:,} users, {self.num_items:,} items, "
            f"{self.train.nnz:,} train + {self.test.nnz:,} test interactions "
            f"(density {density:.4%})",
            f"  train items/user min {tr.min()} median {int(np.median(tr))} max {tr.max()}; "
            f"test items/user min {te.min()} median {int(np.median(te))} max {te.max()}",
        ]
        if self.ratings is not None:
            lo, hi = self.ratings.scale
            lines.append(
                f"  explicit ratings: {len(self.ratings.values):,} on [{lo:g}, {hi:g}] step {self.ratings.step:g}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

"""Fake user profiles and the batched helpers the attacks share to build them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from central.rating_split import RatingGrid, RatingTriples
from recsys.atomic import atomic_path


@dataclass(frozen=True)
class FakeProfiles:
    """Ratings of ``num_fake`` fake users (ids 0..num_fake-1) on the raw rating scale."""

    num_fake: int
    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray  # float32, raw scale

    def save(self, path: Path) -> None:
        """Write the profiles to ``path`` (.npz), atomically and safely beside concurrent writers."""
        with atomic_path(path) as tmp, tmp.open("wb") as handle:  # a handle: np.savez would append ".npz" to a name
            np.savez(handle, num_fake=self.num_fake, users=self.users, items=self.items, ratings=self.ratings)

    @classmethod
    def load(cls, path: Path) -> FakeProfiles:
        with np.load(path) as data:
            return cls(int(data["num_fake"]), data["users"], data["items"], data["ratings"])

    def as_triples(self, first_user: int, grid: RatingGrid) -> RatingTriples:
        """The profiles as training triples for users ``first_user ...`` (normalised ratings)."""
        return RatingTriples.from_numpy(self.users + first_user, self.items, grid.normalise(self.ratings))


def draw_fillers(rng: np.random.Generator, num_fake: int, num_items: int, num_fillers: int,
                 excluded: np.ndarray, weights: np.ndarray | None = None,
                 taken: np.ndarray | None = None) -> np.ndarray:
    """[num_fake, num_fillers] distinct items per row, never an ``excluded`` one nor one of the
    row's ``taken`` items ([num_fake, j]), drawn without replacement proportionally to ``weights``
    ([num_items] or per row [num_fake, num_items]; uniform by default; Gumbel top-k, batched)."""
    allowed = num_items - len(np.unique(excluded)) - (0 if taken is None else taken.shape[1])
    if num_fillers > allowed:
        raise ValueError(f"{num_fillers} filler items requested but only {allowed} items can be fillers")
    keys = rng.gumbel(size=(num_fake, num_items))
    if weights is not None:
        with np.errstate(divide="ignore"):
            keys += np.log(np.asarray(weights, dtype=np.float64))
    keys[:, excluded] = -np.inf
    if taken is not None:
        keys[np.arange(num_fake)[:, None], taken] = -np.inf
    return np.argpartition(-keys, num_fillers - 1, axis=1)[:, :num_fillers]


def assemble(fillers: np.ndarray, filler_ratings: np.ndarray, targets: np.ndarray, grid: RatingGrid) -> FakeProfiles:
    """Profiles of the given fillers (ratings snapped to the grid) plus every target at the maximum rating."""
    num_fake, num_fillers = fillers.shape
    items = np.concatenate((fillers, np.broadcast_to(targets, (num_fake, len(targets)))), axis=1)
    ratings = np.concatenate((grid.snap(np.asarray(filler_ratings, dtype=np.float64)),
                              np.full((num_fake, len(targets)), grid.high)), axis=1)
    users = np.repeat(np.arange(num_fake, dtype=np.int64), items.shape[1])
    return FakeProfiles(num_fake, users, items.reshape(-1).astype(np.int64), ratings.reshape(-1).astype(np.float32))

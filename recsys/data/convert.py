"""Building train/test ``Dataset``s from parsed files: renumbering, filtering, the per-user split."""

from __future__ import annotations

import numpy as np

from recsys.data.cleaning import deduplicate, first_occurrences
from recsys.data.dataset import Dataset, Interactions, Ratings

TEST_FRACTION = 0.2


def split_by_user(
    users: np.ndarray, items: np.ndarray, num_users: int, test_fraction: float = TEST_FRACTION
) -> tuple[Interactions, Interactions]:
    """Split each user's items, in the given order, as the federated paper's code does:
    the last ``int(test_fraction * n)`` of a user's ``n`` items go to test, the rest to train."""
    grouped = Interactions.from_pairs(users, items, num_users)
    lengths = grouped.lengths()
    num_test = (test_fraction * lengths).astype(np.int64)  # truncates like int()
    position = np.arange(grouped.nnz) - np.repeat(grouped.indptr[:-1], lengths)
    is_test = position >= np.repeat(lengths - num_test, lengths)
    rows = grouped.row_ids()
    train = Interactions.from_pairs(rows[~is_test], grouped.items[~is_test], num_users)
    test = Interactions.from_pairs(rows[is_test], grouped.items[is_test], num_users)
    return train, test


def resplit_at_random(dataset: Dataset, seed: int, test_fraction: float = TEST_FRACTION) -> Dataset:
    """The same interactions split again: each user's train and test items shuffled together (seeded), then
    ``split_by_user``'s rule, so every user keeps the same number of test items as under that rule."""
    users = np.concatenate((dataset.train.row_ids(), dataset.test.row_ids()))
    items = np.concatenate((dataset.train.items, dataset.test.items))
    order = np.lexsort((np.random.default_rng(seed).random(len(items)), users))
    train, test = split_by_user(users[order], items[order], dataset.num_users, test_fraction)
    note = f"train/test split again at random (seed {seed}), each user's last {test_fraction:.0%} of a shuffle to test"
    return Dataset(dataset.name, dataset.num_users, dataset.num_items, train, test, dataset.ratings,
                   dataset.notes + (note,))


def ratings_to_dataset(
    name: str, raw: Ratings, *, min_user_ratings: int = 0, test_fraction: float = TEST_FRACTION
) -> Dataset:
    """Implicit dataset from explicit ratings with raw ids (in file order).

    Repeated (user, item) pairs keep their last rating; users with fewer than
    ``min_user_ratings`` ratings are dropped; users and items are renumbered 0.. in
    ascending raw-id order; every rated item is a positive, split by ``split_by_user``.
    """
    users, items = _dense(raw.users), _dense(raw.items)
    keep = first_occurrences(users[::-1], items[::-1])[::-1]  # last occurrence of each pair
    notes = []
    if repeats := len(keep) - int(np.count_nonzero(keep)):
        notes.append(f"{repeats:,} repeated (user, item) ratings dropped, the last one of each kept")
    if min_user_ratings > 0:
        per_user = np.bincount(users[keep])
        enough = per_user >= min_user_ratings
        if not enough.any():
            raise ValueError(f"{name}: no user has at least {min_user_ratings} ratings")
        keep &= enough[users]
        notes.append(f"kept {np.count_nonzero(enough):,} of {len(per_user):,} users with >= {min_user_ratings} ratings")
    users, items = _dense(users[keep]), _dense(items[keep])
    num_users, num_items = int(users.max()) + 1, int(items.max()) + 1
    ratings = Ratings(users, items, raw.values[keep], raw.scale, raw.step)
    train, test = split_by_user(users, items, num_users, test_fraction)
    return Dataset(name, num_users, num_items, train, test, ratings, tuple(notes))


def lists_to_dataset(name: str, train: Interactions, test: Interactions) -> Dataset:
    """Dataset from per-user train and test lists (0-based ids), cleaned by ``deduplicate``.

    Users and items are numbered up to the largest id in either list.
    """
    num_users = max(train.num_users, test.num_users)
    train, test, notes = deduplicate(_pad(train, num_users), _pad(test, num_users))
    counts = np.bincount(np.concatenate((train.items, test.items)))
    num_items = len(counts)
    if unused := int(np.count_nonzero(counts == 0)):
        notes += (f"{unused:,} of {num_items:,} item ids never occur",)
    return Dataset(name, num_users, num_items, train, test, notes=notes)


def _dense(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered 0.. in ascending order of the original ids."""
    return np.unique(ids, return_inverse=True)[1].astype(np.int64)


def _pad(interactions: Interactions, num_users: int) -> Interactions:
    """The same rows followed by empty rows up to ``num_users``."""
    extra = np.full(num_users - interactions.num_users, interactions.indptr[-1])
    return Interactions(np.concatenate((interactions.indptr, extra)), interactions.items)

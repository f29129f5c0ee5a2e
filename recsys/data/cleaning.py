"""Removing repeated items from per-user train/test lists."""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Interactions


def first_occurrences(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Mask of the entries whose (row, item) pair does not occur at an earlier position."""
    # both sorts are stable, so equal pairs stay in position order
    span = int(items.max(initial=0)) + 1
    if int(rows.max(initial=0)) + 1 <= np.iinfo(np.int64).max // span:  # one int64 key: much faster
        order = np.argsort(rows * span + items, kind="stable")
    else:
        order = np.lexsort((items, rows))
    rows, items = rows[order], items[order]
    repeated = np.zeros(len(order), dtype=bool)
    repeated[1:] = (rows[1:] == rows[:-1]) & (items[1:] == items[:-1])
    keep = np.ones(len(order), dtype=bool)
    keep[order[repeated]] = False
    return keep


def deduplicate(train: Interactions, test: Interactions) -> tuple[Interactions, Interactions, tuple[str, ...]]:
    """Keep the first occurrence of each item in each train and each test list, and drop
    test items already in the same user's train list; notes count what was removed."""
    train, train_repeats = _unique_per_row(train)
    test, test_repeats = _unique_per_row(test)
    rows = np.concatenate((train.row_ids(), test.row_ids()))
    items = np.concatenate((train.items, test.items))
    not_in_train = first_occurrences(rows, items)[train.nnz :]
    overlap = test.nnz - int(np.count_nonzero(not_in_train))
    test = _select(test, not_in_train)
    counts = (
        (train_repeats, "repeated items removed from train lists (first occurrence kept)"),
        (test_repeats, "repeated items removed from test lists (first occurrence kept)"),
        (overlap, "test items removed because the same user's train list has them"),
    )
    return train, test, tuple(f"{count:,} {what}" for count, what in counts if count)


def _unique_per_row(interactions: Interactions) -> tuple[Interactions, int]:
    keep = first_occurrences(interactions.row_ids(), interactions.items)
    return _select(interactions, keep), interactions.nnz - int(np.count_nonzero(keep))


def _select(interactions: Interactions, keep: np.ndarray) -> Interactions:
    rows = interactions.row_ids()[keep]
    return Interactions.from_pairs(rows, interactions.items[keep], interactions.num_users)

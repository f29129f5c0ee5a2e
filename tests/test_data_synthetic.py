"""The synthetic generator: determinism, sizes, long tail, split, ratings, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recsys.data import Dataset, load_dataset, make_synthetic


def arrays(ds: Dataset) -> list[np.ndarray]:
    assert ds.ratings is not None
    return [ds.train.indptr, ds.train.items, ds.test.indptr, ds.test.items,
            ds.ratings.users, ds.ratings.items, ds.ratings.values]  # fmt: skip


@pytest.fixture(scope="module")
def small() -> Dataset:
    return make_synthetic(num_users=3000, num_items=400, mean_items_per_user=30, seed=7)


def test_same_seed_same_data_other_seed_other_data(small: Dataset) -> None:
    again = make_synthetic(num_users=3000, num_items=400, mean_items_per_user=30, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(small), arrays(again), strict=True))
    other = make_synthetic(num_users=3000, num_items=400, mean_items_per_user=30, seed=8)
    assert not np.array_equal(small.train.items[:1000], other.train.items[:1000])


def test_sizes_and_valid_ids(small: Dataset) -> None:
    assert (small.num_users, small.num_items) == (3000, 400)
    assert small.train.num_users == small.test.num_users == 3000
    for part in (small.train, small.test):
        assert part.items.min() >= 0 and part.items.max() < 400
    totals = small.train.lengths() + small.test.lengths()
    assert totals.min() >= 5 and totals.max() <= 400
    assert 27 <= totals.mean() <= 33
    assert totals.max() > 3 * totals.mean()  # long-tailed counts


def test_items_are_distinct_per_user_and_split_80_20(small: Dataset) -> None:
    rows = np.concatenate((small.train.row_ids(), small.test.row_ids()))
    items = np.concatenate((small.train.items, small.test.items))
    assert len(np.unique(rows * small.num_items + items)) == len(items)
    totals = small.train.lengths() + small.test.lengths()
    assert np.array_equal(small.test.lengths(), (0.2 * totals).astype(int))


def test_popularity_is_long_tailed(small: Dataset) -> None:
    popularity = np.sort(small.item_popularity())[::-1]
    assert popularity[:40].sum() > 0.3 * popularity.sum()  # top 10% of items
    assert popularity[-200:].sum() < 0.2 * popularity.sum()  # bottom half


def test_ratings_follow_the_interactions(small: Dataset) -> None:
    ratings = small.ratings
    assert ratings is not None
    assert (ratings.scale, ratings.step) == ((1.0, 5.0), 1.0)
    assert len(ratings.values) == small.train.nnz + small.test.nnz
    assert set(np.unique(ratings.values)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    order = np.lexsort((ratings.items, ratings.users))
    rows = np.concatenate((small.train.row_ids(), small.test.row_ids()))
    items = np.concatenate((small.train.items, small.test.items))
    both = np.lexsort((items, rows))
    assert np.array_equal(ratings.users[order], rows[both]) and np.array_equal(ratings.items[order], items[both])


def test_minimum_counts_and_all_items_case() -> None:
    ds = make_synthetic(num_users=50, num_items=5, mean_items_per_user=5, seed=1)
    assert np.all(ds.train.lengths() + ds.test.lengths() == 5)
    assert np.all(np.sort(np.concatenate((ds.train.user(0), ds.test.user(0)))) == np.arange(5))


def test_invalid_mean_is_rejected() -> None:
    with pytest.raises(ValueError, match="mean_items_per_user"):
        make_synthetic(num_items=20, mean_items_per_user=3)
    with pytest.raises(ValueError, match="mean_items_per_user"):
        make_synthetic(num_items=20, mean_items_per_user=30)


def test_load_dataset_passes_options() -> None:
    via_registry = load_dataset("synthetic", num_users=200, num_items=100, seed=3)
    direct = make_synthetic(num_users=200, num_items=100, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(via_registry), arrays(direct), strict=True))


def test_200k_users_is_fast() -> None:
    start = time.perf_counter()
    ds = make_synthetic(num_users=200_000, num_items=500, seed=0)
    assert time.perf_counter() - start < 30
    assert ds.num_users == 200_000
    assert 5_500_000 < ds.train.nnz + ds.test.nnz < 6_500_000

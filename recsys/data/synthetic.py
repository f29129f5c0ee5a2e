"""Synthetic implicit/explicit feedback from a latent-factor model with long-tail popularity."""

from __future__ import annotations

import numpy as np

from recsys.data.convert import TEST_FRACTION, split_by_user
from recsys.data.dataset import Dataset, Ratings

MIN_ITEMS_PER_USER = 5
_SCORES_PER_CHUNK = 1 << 22  # user x item scores held at once (bounds memory)
_TINY = np.finfo(np.float32).tiny


def make_synthetic(
    num_users: int = 1000,
    num_items: int = 500,
    mean_items_per_user: float = 30,
    dim: int = 8,
    seed: int = 0,
    *,
    temperature: float = 1.0,
    popularity_exponent: float = 1.0,
    count_sigma: float = 0.8,
    test_fraction: float = TEST_FRACTION,
) -> Dataset:
    """A dataset fully determined by its arguments.

    Users and items get Gaussian factors whose dot product (the affinity) has unit variance;
    items get a Zipf-like bias ``-popularity_exponent * log(rank)`` over a random popularity
    ranking. Each user draws ``5 + LogNormal(sigma=count_sigma)`` items (mean
    ``mean_items_per_user``, at most ``num_items``) without replacement with probability
    proportional to ``exp(affinity / temperature + bias)`` (Gumbel-top-k), in random order.
    Ratings 1..5 are the rounded affinity plus noise. Each user's list is split like the real
    datasets (``split_by_user``).
    """
    if not MIN_ITEMS_PER_USER <= mean_items_per_user <= num_items:
        raise ValueError(f"mean_items_per_user must be in [{MIN_ITEMS_PER_USER}, num_items={num_items}]")
    rng = np.random.default_rng(seed)
    item_factors = rng.standard_normal((num_items, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    bias = (-popularity_exponent * np.log(rng.permutation(num_items) + 1.0)).astype(np.float32)
    counts = _items_per_user(rng, num_users, num_items, mean_items_per_user, count_sigma)
    indptr = np.concatenate(([0], np.cumsum(counts)))
    items = np.empty(indptr[-1], dtype=np.int64)
    values = np.empty(indptr[-1], dtype=np.float32)
    by_count = np.argsort(counts, kind="stable")  # chunks of similar counts need few top items each
    chunk = max(1, _SCORES_PER_CHUNK // num_items)
    for start in range(0, num_users, chunk):
        users = by_count[start : start + chunk]
        user_factors = rng.standard_normal((len(users), dim), dtype=np.float32)
        slots, chunk_items, chunk_values = _sample(rng, user_factors @ item_factors.T, bias, counts[users], temperature)
        positions = (indptr[users][:, None] + np.arange(slots.shape[1]))[slots]
        items[positions], values[positions] = chunk_items, chunk_values
    users = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    train, test = split_by_user(users, items, num_users, test_fraction)
    ratings = Ratings(users, items, values, (1.0, 5.0), 1.0)
    note = (
        f"synthetic: seed {seed}, dim {dim}, temperature {temperature:g}, popularity exponent {popularity_exponent:g}"
    )
    return Dataset("synthetic", num_users, num_items, train, test, ratings, (note,))


def _items_per_user(rng: np.random.Generator, num_users: int, num_items: int, mean: float, sigma: float) -> np.ndarray:
    """``5 + LogNormal`` counts with the requested mean, capped at ``num_items``."""
    extra = mean - MIN_ITEMS_PER_USER
    if extra == 0:
        return np.full(num_users, MIN_ITEMS_PER_USER, dtype=np.int64)
    draws = rng.lognormal(np.log(extra) - sigma**2 / 2, sigma, num_users)
    return np.minimum(MIN_ITEMS_PER_USER + np.rint(draws).astype(np.int64), num_items)


def _sample(
    rng: np.random.Generator, affinity: np.ndarray, bias: np.ndarray, counts: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gumbel-top-k for a chunk of users (one row of ``affinity`` each).

    Returns the mask of used slots (row ``r`` uses its first ``counts[r]``), and the items
    and ratings of the used slots in row-major order, in random order within each row.
    """
    num_items, most = affinity.shape[1], int(counts.max())
    scores = rng.standard_exponential(affinity.shape, dtype=np.float32)
    np.log(np.maximum(scores, _TINY, out=scores), out=scores)  # minus a Gumbel variable
    np.subtract(affinity / np.float32(temperature) + bias, scores, out=scores)
    if most < num_items:
        top = np.argpartition(scores, num_items - most, axis=1)[:, num_items - most :]
    else:
        top = np.broadcast_to(np.arange(num_items), scores.shape)
    best_first = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    slots = np.arange(most) < counts[:, None]
    shuffle = np.argsort(rng.random(slots.shape) + ~slots, axis=1)  # used slots first, in random order
    chosen = np.take_along_axis(best_first, shuffle, axis=1)
    noisy = 3.0 + np.take_along_axis(affinity, chosen, axis=1)[slots]
    noisy += 0.5 * rng.standard_normal(len(noisy), dtype=np.float32)
    return slots, chosen[slots], np.clip(np.rint(noisy), 1, 5)

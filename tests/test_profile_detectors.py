"""Detectors of fake profiles (``defenses.profile_detectors``) on hand-built data, DegSim against a per-pair loop, and
the screen on their scores (``defenses.detector_screen``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from defenses.detector_screen import screened_users
from defenses.profile_detectors import (DETECTORS, LOG_OFFSET, NEIGHBOURS, degsim_score, greedy_peel, length_score,
                                        popularity_score, separation)
from recsys.data.dataset import Interactions


def test_length_and_popularity_scores_on_hand_built_lists():
    lists = Interactions.from_lists([[0, 1], [0], [2]])  # item counts 2, 1, 1
    np.testing.assert_array_equal(length_score(lists, 3), [-2.0, -1.0, -1.0])
    np.testing.assert_allclose(popularity_score(lists, 3), [-1.5, -2.0, -1.0])


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_degsim_and_nearest_are_the_jaccard_to_the_most_similar_users_in_any_chunks(chunk):
    rng = np.random.default_rng(0)
    lists = [sorted(rng.choice(20, size=rng.integers(1, 9), replace=False).tolist()) for _ in range(30)]
    reference = []
    for u, mine in enumerate(lists):
        jaccard = [len(set(mine) & set(other)) / len(set(mine) | set(other)) for v, other in enumerate(lists) if v != u]
        reference.append(np.mean(sorted(jaccard)[-NEIGHBOURS:]))
    np.testing.assert_allclose(degsim_score(Interactions.from_lists(lists), 20, chunk=chunk), reference, rtol=1e-6)
    nearest = [max(len(set(mine) & set(other)) / len(set(mine) | set(other)) for v, other in enumerate(lists) if v != u)
               for u, mine in enumerate(lists)]
    np.testing.assert_allclose(DETECTORS["nearest"](Interactions.from_lists(lists), 20), nearest, rtol=1e-6)


def test_separation_counts_ties_half_and_catches_above_the_real_users_top_percent():
    real, fake = np.arange(100.0), np.array([150.0, 50.0])
    result = separation(np.concatenate((real, fake)), np.arange(102) >= 100)
    assert result["auc"] == pytest.approx((100 + 50.5) / 200)  # 150 above all; 50 above 50 of them, tied with one
    assert result["caught"] == 0.5  # the threshold is the real users' 99th percentile, 99: only 150 is above


def test_identical_fake_profiles_are_the_most_similar_users():
    real = [list(combination) for combination in itertools.combinations(range(12), 3)][:40]
    fake = [[0, 5, 11, 7]] * 5
    scores = degsim_score(Interactions.from_lists(real + fake), 12)
    assert separation(scores, np.arange(45) >= 40) == {"auc": 1.0, "caught": 1.0}


def _densest_by_brute_force(lists: list[list[int]], num_items: int) -> float:
    """max f(S) / |S| over every non-empty set S of users and items, FRAUDAR's edge weights."""
    counts = np.bincount([i for row in lists for i in row], minlength=num_items)
    edges = [(u, len(lists) + i, 1.0 / np.log(counts[i] + LOG_OFFSET)) for u, row in enumerate(lists) for i in row]
    nodes, best = len(lists) + num_items, 0.0
    for mask in range(1, 2 ** nodes):
        inside = [(mask >> node) & 1 for node in range(nodes)]
        weight = sum(w for a, b, w in edges if inside[a] and inside[b])
        best = max(best, weight / sum(inside))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_greedy_peeling_finds_at_least_half_the_densest_subgraphs_density(seed):
    """FRAUDAR's guarantee, against every subset of a 5-user, 6-item graph; each node is removed exactly once."""
    rng = np.random.default_rng(seed)
    lists = [sorted(rng.choice(6, size=rng.integers(1, 5), replace=False).tolist()) for _ in range(5)]
    step, density = greedy_peel(Interactions.from_lists(lists), 6)
    optimum = _densest_by_brute_force(lists, 6)
    assert sorted(step) == list(range(11)) and optimum / 2 <= density.max() <= optimum + 1e-12


def test_fraudar_peels_a_planted_dense_block_last():
    """8 fake users clicking the same 8 items, among 300 real users with 2–5 uniform items each, are the users peeled
    last: all caught where 1 % of the real users are."""
    rng = np.random.default_rng(0)
    real = [sorted(rng.choice(400, size=rng.integers(2, 6), replace=False).tolist()) for _ in range(300)]
    block = sorted(rng.choice(400, size=8, replace=False).tolist())
    scores = DETECTORS["fraudar"](Interactions.from_lists(real + [block] * 8), 400)
    assert separation(scores, np.arange(308) >= 300) == {"auc": 1.0, "caught": 1.0}


def _random_lists(users: int, items: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(items, size=rng.integers(5, 15), replace=False).tolist()) for _ in range(users)]


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_screen_on_the_clean_data_it_was_calibrated_on_drops_at_most_one_percent(detector):
    clean = Interactions.from_lists(_random_lists(300, 200))
    kept = screened_users(clean, clean, 200, [DETECTORS[detector]])
    assert 300 - len(kept) <= 3 and np.all(np.diff(kept) > 0)


def test_screen_on_nearest_drops_the_copies_of_a_user_and_the_user_copied():
    lists = _random_lists(300, 200)
    clean, poisoned = Interactions.from_lists(lists), Interactions.from_lists(lists + [lists[7]] * 3)
    kept = screened_users(poisoned, clean, 200, [DETECTORS["nearest"]])
    assert 7 not in kept and not set(kept) & {300, 301, 302}
    clean_kept = screened_users(clean, clean, 200, [DETECTORS["nearest"]])
    assert set(range(300)) - set(kept) - {7} <= set(range(300)) - set(clean_kept)


def test_a_screen_on_several_detectors_keeps_the_users_each_of_them_keeps():
    lists = _random_lists(300, 200)
    clean, poisoned = Interactions.from_lists(lists), Interactions.from_lists(lists + [lists[7]] * 3 + [[0, 1]] * 2)
    each = [set(screened_users(poisoned, clean, 200, [DETECTORS[name]]).tolist()) for name in ("nearest", "length")]
    both = screened_users(poisoned, clean, 200, [DETECTORS["nearest"], DETECTORS["length"]])
    assert set(both.tolist()) == each[0] & each[1] and each[0] != each[1]

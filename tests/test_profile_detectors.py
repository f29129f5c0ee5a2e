"""Detectors of fake profiles (``defenses.profile_detectors``) on hand-built data, DegSim against a per-pair loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from defenses.profile_detectors import DETECTORS, NEIGHBOURS, degsim_score, length_score, popularity_score, separation
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

"""Ranking metrics against hand-computed cases."""

import math

import numpy as np
import torch

from recsys.data.dataset import Interactions
from recsys.metrics import rank_metrics


def test_hr_precision_ndcg_by_hand():
    # 2 users, 6 items. Scores rank items 0 > 1 > 2 > 3 > 4 > 5 for both.
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1], [6.0, 5, 4, 3, 2, 1]])
    train = Interactions.from_lists([[0], [1, 2]])  # masked out of the ranking
    test = Interactions.from_lists([[1, 4], [5]])
    sums = rank_metrics(scores, train, test, torch.tensor([], dtype=torch.int64), k=2, er_ks=(1,))
    # user 0: top-2 = [1, 2]: 1 hit of 2 test items at rank 1 → HR 1/2, P 1/2, NDCG 1 / (1 + 1/log2 3)
    # user 1: top-2 = [0, 3]: no hit.
    assert sums.test_users == 2
    assert math.isclose(sums.hr, 0.5)
    assert math.isclose(sums.precision, 0.5)
    assert math.isclose(sums.ndcg, 1 / (1 + 1 / math.log2(3)), rel_tol=1e-6)
    final = sums.finalize(2, (1,))
    assert math.isclose(final["test/hr@2"], 0.25) and math.isclose(final["test/precision@2"], 0.25)


def test_ndcg_uses_min_of_test_size_and_k():
    scores = torch.tensor([[5.0, 4, 3, 2, 1]])
    sums = rank_metrics(scores, Interactions.from_lists([[]]), Interactions.from_lists([[1]]),
                        torch.tensor([], dtype=torch.int64), k=3, er_ks=(1,))
    assert math.isclose(sums.ndcg, 1 / math.log2(3), rel_tol=1e-6)  # hit at rank 2, IDCG = 1


def test_users_without_test_items_are_not_averaged():
    scores = torch.tensor([[3.0, 2, 1], [3.0, 2, 1]])
    sums = rank_metrics(scores, Interactions.from_lists([[], []]), Interactions.from_lists([[0], []]),
                        torch.tensor([], dtype=torch.int64), k=1, er_ks=(1,))
    assert sums.test_users == 1 and math.isclose(sums.hr, 1.0)


def test_exposure_ratio_by_hand():
    # 4 users, 5 items, target item 4. Scores: item 4 is 2nd best for users 0-1, 4th for user 2.
    scores = torch.tensor([
        [5.0, 1, 1, 1, 4],
        [5.0, 1, 1, 1, 4],
        [5.0, 4, 3, 0, 1],
        [5.0, 1, 1, 1, 9],
    ])
    train = Interactions.from_lists([[0], [], [], [4]])  # user 3 interacted with the target: not eligible
    test = Interactions.from_lists([[1], [0], [1], [2]])
    # top lists over non-interacted items: u0 [4, ...] → rank 1; u1: item 0 is in test, so [4, ...] → rank 1;
    # u2: items 1 (test) removed → [0, 2, 4, 3] → target at rank 3.
    sums = rank_metrics(scores, train, test, torch.tensor([4]), k=1, er_ks=(1, 2, 3))
    np.testing.assert_array_equal(sums.target_eligible, [3])
    np.testing.assert_array_equal(sums.target_hits[:, 0], [2, 2, 3])
    final = sums.finalize(1, (1, 2, 3))
    assert math.isclose(final["target/er@1"], 2 / 3) and math.isclose(final["target/er@3"], 1.0)


def test_er_is_the_mean_over_targets():
    scores = torch.tensor([[1.0, 3, 2], [1.0, 3, 2]])
    empty = Interactions.from_lists([[], []])
    sums = rank_metrics(scores, empty, empty, torch.tensor([1, 0]), k=1, er_ks=(1,))
    assert sums.finalize(1, (1,))["target/er@1"] == 0.5  # item 1 always first, item 0 never

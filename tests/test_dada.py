"""Approximate DADA: its difficulty weights, communities and weighted loss against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.implicit import PoisonSetting, dada
from central.objectives import interaction_mask
from recsys.data import make_synthetic
from recsys.data.dataset import Interactions


def test_difficulty_weights_follow_the_targets_rank_among_unseen_items():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 12, generator=g, dtype=torch.float64)
    seen = torch.rand(5, 12, generator=g) < 0.3
    seen[0, 2] = True  # user 0 has target 2 in training: weight 0
    targets, top = torch.tensor([2, 9]), 3
    weights = dada.difficulty_weights(scores, targets, seen, top=top, power=2.0)
    s, mask = scores.numpy(), seen.numpy()
    for u in range(5):
        for k, t in enumerate(targets.tolist()):
            rank = 1 + sum(s[u, j] > s[u, t] for j in range(12) if not mask[u, j])
            expected = 0.0 if mask[u, t] else (top / max(rank, top)) ** 2.0
            assert float(weights[u, k]) == pytest.approx(expected, rel=1e-12)
    assert float(weights[0, 0]) == 0.0 and (weights > 0).any()


def test_weighted_softmax_loss_and_gradient_equal_the_sum_written_out():
    scores = torch.randn(4, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 5])
    weights = torch.tensor([[1.0, 0.5], [0.0, 2.0], [0.3, 0.3], [1.0, 0.0]], dtype=torch.float64)
    loss = dada.weighted_softmax_loss(scores, targets, weights)
    s, w = scores.detach().numpy(), weights.numpy()
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    expected = sum(-w[u, k] * np.log(p[u, t]) for u in range(4) for k, t in enumerate(targets.tolist())) / w.sum()
    grad = np.zeros_like(s)
    for u in range(4):
        for k, t in enumerate(targets.tolist()):
            grad[u] += w[u, k] * (p[u] - np.eye(7)[t]) / w.sum()
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(scores.grad.numpy(), grad, rtol=1e-10, atol=1e-14)


def test_communities_find_planted_blocks_and_weigh_them_equally():
    blocks = [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]  # three disjoint item sets
    sizes = (20, 8, 4)
    lists = [blocks[b][:4] + [blocks[b][4 + u % 2]] for b, size in enumerate(sizes) for u in range(size)]
    rows = interaction_mask(Interactions.from_lists(lists), 18).numpy().astype(float)
    labels = dada.communities(rows, 3, np.random.default_rng(0))
    planted = np.repeat(np.arange(3), sizes)
    assert len(set(zip(labels.tolist(), planted.tolist()))) == 3 == len(set(labels.tolist()))
    weights = dada.community_weights(labels).numpy()
    for b in range(3):
        assert weights[planted == b].sum() == pytest.approx(len(planted) / 3)


def test_objective_weights_are_constants_of_the_gradient_and_follow_the_seed():
    data = make_synthetic(num_users=60, num_items=30, mean_items_per_user=6, seed=2)
    setting = PoisonSetting(data.train, data.num_items, np.array([3, 17]), 2, 6)
    scores = torch.randn(60, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    targets = torch.as_tensor(setting.targets)
    seen = interaction_mask(setting.train, setting.num_items)
    assert torch.equal(dada.community_weights_of(seen, 0), dada.community_weights_of(seen, 0))
    assert not torch.equal(dada.community_weights_of(seen, 0), dada.community_weights_of(seen, 1))
    grad = torch.func.grad(dada.objective(setting, 0))(scores, targets)
    weights = dada.community_weights_of(seen, 0)[:, None] * dada.difficulty_weights(scores, targets, seen)
    reference = torch.func.grad(lambda s: dada.weighted_softmax_loss(s, targets, weights))(scores)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-15)
    plain = torch.func.grad(lambda s: -torch.log_softmax(s, 1)[:, targets].mean())(scores)
    assert float(torch.nn.functional.cosine_similarity(grad.flatten(), plain.flatten(), dim=0)) < 0.99

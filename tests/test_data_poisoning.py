"""Data-poisoning attacks: profile shape, fillers, rating grid and target rating; attacker knowledge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.data_poisoning import ATTACKS, aush, generate_profiles
from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning import surrogate_ascent
from attacks.data_poisoning.fixed_point import FixedPointMF
from attacks.data_poisoning.surrogate_ascent import poisoned_surrogate
from central.poisoning import attack_profiles, choose_targets, filler_count, inject
from central.rating_mf import MFConfig
from central.rating_split import RatingGrid, split_ratings
from recsys.data.dataset import Ratings

SMALL_MF = MFConfig(dim=8, batch_size=256, lr=0.01, epochs=4)


def make_ratings(num_users: int = 60, num_items: int = 80, scale=(1.0, 5.0), step: float = 1.0, seed: int = 0):
    """Low-rank ratings on a grid: every user rates a random third of the items."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(num_users, 3)) @ rng.normal(size=(3, num_items))
    rated = rng.random((num_users, num_items)) < 1 / 3
    rated[np.arange(num_users), rng.integers(num_items, size=num_users)] = True
    rated[:, :3] = False  # three never-rated (unpopular) items
    users, items = np.nonzero(rated)
    low, high = scale
    raw = low + (high - low) / (1 + np.exp(-taste[users, items]))
    values = np.clip(low + np.round((raw - low) / step) * step, low, high).astype(np.float32)
    return Ratings(users.astype(np.int64), items.astype(np.int64), values, scale, step), num_users, num_items


@pytest.fixture(scope="module")
def knowledge():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    return split, AttackerKnowledge.sample(split, 0.4, seed=0, mf_config=SMALL_MF)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_profiles_respect_size_fillers_scale_and_target_rating(attack, knowledge, monkeypatch):
    monkeypatch.setattr(aush, "STEPS", 20)  # a short GAN run and a short ascent keep the test fast
    monkeypatch.setattr(surrogate_ascent, "ITERATIONS", 3)
    split, known = knowledge
    targets = np.array([0, 1, 7])
    profiles = generate_profiles(attack, known, targets, num_fake=6, num_fillers=10, rng=np.random.default_rng(1))
    assert profiles.num_fake == 6
    assert np.array_equal(np.bincount(profiles.users, minlength=6), np.full(6, 13))  # fillers + targets
    for user in range(6):
        own = profiles.users == user
        items, ratings = profiles.items[own], profiles.ratings[own]
        assert len(np.unique(items)) == 13, "a fake user rates each item once"
        assert set(targets) <= set(items.tolist())
        np.testing.assert_array_equal(ratings[np.isin(items, targets)], 5.0)
    fillers = profiles.ratings[~np.isin(profiles.items, targets)]
    assert fillers.min() >= 1.0 and fillers.max() <= 5.0
    np.testing.assert_array_equal(fillers, np.round(fillers))  # on the 1..5 grid


def test_filmtrust_grid_is_half_stars():
    ratings, users, items = make_ratings(scale=(0.5, 4.0), step=0.5)
    split = split_ratings(ratings, users, items, seed=0)
    known = AttackerKnowledge.sample(split, 0.5, seed=0, mf_config=SMALL_MF)
    profiles = generate_profiles("average", known, np.array([0]), 4, 12, np.random.default_rng(0))
    assert set(np.unique(profiles.ratings)) <= set(np.arange(1, 9) * 0.5)
    np.testing.assert_array_equal(profiles.ratings[profiles.items == 0], 4.0)


def test_knowledge_is_the_requested_share_of_train_and_item_statistics_match():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    known = AttackerKnowledge.sample(split, 0.25, seed=3)
    assert len(known.ratings) == round(0.25 * len(split.train))
    mean, _ = known.item_mean_std()
    item = int(np.bincount(known.items).argmax())
    assert mean[item] == pytest.approx(known.ratings[known.items == item].mean())
    with pytest.raises(ValueError, match="knowledge cost"):
        AttackerKnowledge.sample(split, 0.0, seed=0)


def test_pga_ascent_raises_the_poisoned_surrogate_target_rating_over_its_start(knowledge, monkeypatch):
    _, known = knowledge
    targets = np.array([0, 1])
    real = torch.as_tensor(np.unique(known.users))

    def objective_of(iterations: int) -> float:
        """J = mean predicted target rating of the ALS surrogate at its optimum on the profiles PGA returns."""
        monkeypatch.setattr(surrogate_ascent, "ITERATIONS", iterations)
        profiles = generate_profiles("pga", known, targets, 5, 10, np.random.default_rng(0))
        model, values = poisoned_surrogate(known, 5, torch.as_tensor(profiles.users), torch.as_tensor(profiles.items))
        model.solve(torch.cat((values, torch.as_tensor(profiles.ratings / 5.0))), 30)
        return float((model.user_factors[real] @ model.item_factors[targets].T).mean())

    assert objective_of(15) > objective_of(0) + 0.01


def test_gradient_through_the_als_optimum_matches_finite_differences_of_the_re_solved_model():
    torch.set_default_dtype(torch.float64)
    try:
        generator = torch.Generator().manual_seed(0)
        users, items = torch.nonzero(torch.rand(12, 9, generator=generator) < 0.5, as_tuple=True)
        values = torch.rand(len(users), generator=generator)
        start = (torch.rand(12, 3, generator=generator), torch.rand(9, 3, generator=generator))
        model = FixedPointMF(*start, users, items, l2=0.5)
        model.solve(values, 300)

        def objective(user_factors, item_factors):  # mean rating of item 0 over users 0..7
            return (user_factors[:8] @ item_factors[0]).mean()

        weights = model.objective_weights(objective, 8, values)
        gradient = model.rating_gradient(weights, users, items)
        for index in (0, 5, int(torch.nonzero(items == 0)[0])):
            moved = []
            for sign in (1.0, -1.0):
                other = FixedPointMF(model.user_factors, model.item_factors, users, items, l2=0.5)
                shifted = values.clone()
                shifted[index] += sign * 1e-4
                other.solve(shifted, 100)
                moved.append(float(objective(other.user_factors, other.item_factors)))
            assert float(gradient[index]) == pytest.approx((moved[0] - moved[1]) / 2e-4, rel=0.02, abs=1e-6)
    finally:
        torch.set_default_dtype(torch.float32)


def test_poisoned_split_appends_fake_users_to_train_only(knowledge, tmp_path):
    split, _ = knowledge
    targets = choose_targets(split, "unpopular", 3, seed=0)
    assert set(targets.tolist()) == {0, 1, 2}  # the only items with < 5 ratings
    cache = tmp_path / "profiles" / "random.npz"
    profiles = attack_profiles(split, "random", targets, 0.4, 0.1, seed=0, config=SMALL_MF, cache=cache)
    cached = attack_profiles(split, "average", targets, 0.4, 0.1, seed=0, config=SMALL_MF, cache=cache)
    assert all(np.array_equal(getattr(profiles, f), getattr(cached, f)) for f in ("users", "items", "ratings"))
    poisoned = inject(split, profiles)
    assert poisoned.num_users == split.num_users + 6 and poisoned.num_real_users == split.num_users
    extra = len(poisoned.train) - len(split.train)
    assert extra == 6 * (filler_count(split) + 3)
    assert poisoned.valid is split.valid and poisoned.test is split.test


def test_bad_attack_inputs_are_rejected_with_the_reason(knowledge):
    _, known = knowledge
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        generate_profiles("nope", known, np.array([0]), 1, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="target items"):
        generate_profiles("random", known, np.array([10_000]), 1, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fillers"):
        generate_profiles("random", known, np.array([0]), 1, 500, np.random.default_rng(0))
    assert RatingGrid(1, 5, 1).snap(np.array([0.2, 2.6, 9.0])).tolist() == [1.0, 3.0, 5.0]

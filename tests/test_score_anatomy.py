"""The anatomy of target scores (recsys.score_anatomy) against a per-user loop and a hand-checked case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

import recsys.score_anatomy as anatomy_module
from recsys.data.dataset import Interactions
from recsys.models.ranking import make_model
from recsys.score_anatomy import score_anatomy


def loop_reference(users: np.ndarray, items: np.ndarray, lists: list[list[int]], targets: list[int],
                   k: int) -> dict[str, float]:
    """The measures written out user by user, target by target."""
    item_norm = np.linalg.norm(items, axis=1)
    counts = np.bincount(np.concatenate(lists), minlength=len(items))
    present = np.sort(counts[counts > 0])
    tail = [100.0 * np.searchsorted(present, c, side="left") / len(present) < 50 for c in counts]
    ratios, target_cos, needed, kth_cos, tail_slots = [], [], [], [], 0
    for u, seen in enumerate(lists):
        p = users[u]
        candidates = [i for i in range(len(items)) if i not in seen]
        ranked = sorted(candidates, key=lambda i: -float(p @ items[i]))[:k]
        kth = ranked[-1]
        kth_cos.append(p @ items[kth] / (np.linalg.norm(p) * item_norm[kth]))
        tail_slots += sum(tail[i] for i in ranked)
        for t in targets:
            if t not in seen:
                ratios.append(item_norm[t] / item_norm[kth])
                target_cos.append(p @ items[t] / (np.linalg.norm(p) * item_norm[t]))
                needed.append(p @ items[kth] / (np.linalg.norm(p) * item_norm[t]))
    mask = counts > 0
    ranks = rankdata(item_norm[mask]), rankdata(counts[mask])
    return {"anatomy/target_norm_percentile": float(np.mean([(item_norm < item_norm[t]).mean() for t in targets])),
            "anatomy/target_to_kth_norm": float(np.mean(ratios)), "anatomy/target_cos": float(np.mean(target_cos)),
            "anatomy/target_cos_std": float(np.std(target_cos)), "anatomy/needed_cos": float(np.mean(needed)),
            "anatomy/kth_cos": float(np.mean(kth_cos)), "anatomy/tail_share": tail_slots / (k * len(lists)),
            "anatomy/norm_popularity_spearman": float(np.corrcoef(*ranks)[0, 1])}


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_anatomy_equals_a_per_user_loop_in_any_chunking(monkeypatch, chunk):
    monkeypatch.setattr(anatomy_module, "USER_CHUNK", chunk)
    rng = np.random.default_rng(0)
    num_real, num_fake, num_items, dim = 7, 2, 12, 4
    lists = [sorted(rng.choice(num_items, rng.integers(1, 5), replace=False).tolist()) for _ in range(num_real)]
    users, items = rng.normal(size=(num_real + num_fake, dim)), rng.normal(size=(num_items, dim))
    targets = [2, 9]
    got = score_anatomy(torch.from_numpy(users), torch.from_numpy(items), Interactions.from_lists(lists),
                        np.array(targets), k=3)
    expected = loop_reference(users[:num_real], items, lists, targets, k=3)
    fake = np.linalg.norm(users[num_real:], axis=1).mean() / np.linalg.norm(users[:num_real], axis=1).mean()
    assert got == pytest.approx({**expected, "anatomy/fake_to_real_user_norm": fake}, rel=1e-12)


def test_anatomy_of_a_hand_built_case():
    # user 0 has seen item 0; items 1 (norm 2, along p_0) and 2 (norm 1, at 90°) are its top 2; target = item 2
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[5.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-3.0, 0.0]])
    got = score_anatomy(users, items, Interactions.from_lists([[0]]), np.array([2]), k=2)
    assert got["anatomy/kth_cos"] == pytest.approx(0.0)  # the 2nd item is the target itself: score 0 > -3
    assert got["anatomy/target_to_kth_norm"] == pytest.approx(1.0)
    assert got["anatomy/target_cos"] == pytest.approx(0.0) == got["anatomy/needed_cos"]  # t ties itself
    assert got["anatomy/target_cos_std"] == pytest.approx(0.0)
    assert got["anatomy/target_norm_percentile"] == pytest.approx(0.0)  # the smallest norm of the four
    assert "anatomy/fake_to_real_user_norm" not in got  # no rows beyond the real users
    # one training interaction (item 0): its count 1 is the only non-zero one, so ρ has no spread to rank
    assert np.isnan(got["anatomy/norm_popularity_spearman"])


@pytest.mark.parametrize("name", ["wrmf", "bpr", "lightgcn", "sgl", "simgcl", "wmf-adam"])
def test_every_sharpap_victim_scores_by_the_dot_product_of_its_representations(name):
    lists = [[0, 1], [1, 2, 3], [4, 5], [0, 5], [2, 3]]
    model = make_model(name, 5, 6, 4, torch.Generator().manual_seed(0))
    model.bind(Interactions.from_lists(lists))
    model.eval()
    users = torch.arange(5)
    user_vecs, item_vecs = model.representations()
    torch.testing.assert_close(model.score_all(users), (user_vecs @ item_vecs.T).detach())

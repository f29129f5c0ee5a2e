"""Anatomy of a dot-product recommender's target scores: r_ut = ‖p_u‖ ‖q_t‖ cos(p_u, q_t).

For the real users u (the rows of ``train``), each ranking all items with its training items masked, k(u) = u's K-th
highest-scored item, and the targets t open to u (not in u's training list):

* ``anatomy/target_norm_percentile``: the share of items whose ‖q‖ is strictly below ‖q_t‖, mean over targets;
* ``anatomy/target_to_kth_norm``: ‖q_t‖ / ‖q_k(u)‖, mean over the open (u, t) pairs;
* ``anatomy/target_cos``, ``anatomy/target_cos_std``: cos(p_u, q_t), mean and standard deviation over the open pairs;
  ``anatomy/kth_cos``: cos(p_u, q_k(u)), mean over u;
* ``anatomy/needed_cos``: the cosine at which t would tie k(u), r_uk(u) / (‖p_u‖ ‖q_t‖), mean over the open pairs
  (t is in u's top K iff cos(p_u, q_t) reaches it);
* ``anatomy/tail_share``: the share of the users' top-K slots that hold tail items (popularity band "tail" of
  ``recsys.promotion_metrics``: training count below the median of the items with an interaction);
* ``anatomy/norm_popularity_spearman``: Spearman's ρ between ‖q_i‖ and the training count over the items with an
  interaction;
* ``anatomy/fake_to_real_user_norm`` (only when ``user_vecs`` has rows beyond the real users): mean ‖p‖ of those rows
  over the real users' mean ‖p‖.

A target enters u's top K iff r_ut ≥ r_uk(u), i.e. cos(p_u, q_t) ≥ cos(p_u, q_k(u)) · ‖q_k(u)‖ / ‖q_t‖ (the needed
cosine): the norms say how far the target's length lowers that bar, the cosines where the bar and the target sit.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from recsys.data.dataset import Interactions
from recsys.promotion_metrics import USER_CHUNK, masked_scores, popularity_bands


class _DotScorer:
    """Scores r_ui = p_u · q_i of given vectors (``masked_scores``' scorer)."""

    def __init__(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> None:
        self.user_vecs, self.item_vecs = user_vecs, item_vecs

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_vecs[users] @ self.item_vecs.T


def score_anatomy(user_vecs: torch.Tensor, item_vecs: torch.Tensor, train: Interactions, targets: np.ndarray,
                  k: int = 20) -> dict[str, float]:
    """The measures above for a model scoring r_ui = p_u · q_i with ``user_vecs`` [≥ N, d] and ``item_vecs`` [M, d]
    (N = ``train.num_users`` real users; further rows are fake users)."""
    num_items = item_vecs.shape[0]
    items = item_vecs.detach().to(device="cpu", dtype=torch.float64)
    users = user_vecs.detach().to(device="cpu", dtype=torch.float64)
    real = users[:train.num_users]
    scorer = _DotScorer(real, items)
    item_norm, user_norm = items.norm(dim=1), real.norm(dim=1)
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    tail = torch.from_numpy(np.array(popularity_bands(train, num_items, np.arange(num_items))) == "tail")
    norm_ratio = target_cos = target_cos_squares = needed_cos = kth_cos = 0.0
    open_pairs = tail_slots = 0
    for start in range(0, train.num_users, USER_CHUNK):
        stop = min(start + USER_CHUNK, train.num_users)
        block_norm = user_norm[start:stop, None]
        scores = masked_scores(scorer, train, start, stop)
        top = scores.topk(k, dim=1)
        kth, kth_scores = top.indices[:, -1], top.values[:, -1:]
        target_scores = scores[:, targets_t]  # -inf where t is in u's training list
        is_open = torch.isfinite(target_scores)
        target_norm = item_norm[targets_t][None, :]
        cos_t = (target_scores / (block_norm * target_norm))[is_open]
        norm_ratio += float((target_norm / item_norm[kth][:, None])[is_open].sum())
        target_cos += float(cos_t.sum())
        target_cos_squares += float((cos_t ** 2).sum())
        needed_cos += float((kth_scores / (block_norm * target_norm))[is_open].sum())
        open_pairs += int(is_open.sum())
        kth_cos += float((kth_scores[:, 0] / (block_norm[:, 0] * item_norm[kth])).sum())
        tail_slots += int(tail[top.indices].sum())
    counts = np.bincount(train.items, minlength=num_items)
    present = counts > 0
    pairs = max(open_pairs, 1)
    out = {"anatomy/target_norm_percentile": float((item_norm[None, :] < item_norm[targets_t][:, None])
                                                   .to(torch.float64).mean(1).mean()),
           "anatomy/target_to_kth_norm": norm_ratio / pairs, "anatomy/target_cos": target_cos / pairs,
           "anatomy/target_cos_std": max(target_cos_squares / pairs - (target_cos / pairs) ** 2, 0.0) ** 0.5,
           "anatomy/needed_cos": needed_cos / pairs,
           "anatomy/kth_cos": kth_cos / train.num_users,
           "anatomy/tail_share": tail_slots / (k * train.num_users),
           "anatomy/norm_popularity_spearman": float(spearmanr(item_norm.numpy()[present], counts[present])[0])}
    if users.shape[0] > train.num_users:
        out["anatomy/fake_to_real_user_norm"] = float(users[train.num_users:].norm(dim=1).mean() / user_norm.mean())
    return out

"""DADA (Li, Di & Chen NeurIPS'22, "Revisiting Injective Attacks on Recommender Systems"), approximate: RevAdv's
outer loop (``revadv.run``) with a difficulty- and diversity-weighted adversarial loss, so that SharpAP wraps it as
it wraps RevAdv.

Only DADA's abstract is known here (no public code): existing attackers spend their effort on *difficult* users
with a low tendency toward the target, and their fake users serve the *large communities*; DADA's objectives let
*easy* users from *various communities* weigh more. Reconstructed as constant (detached) weights on RevAdv's
softmax loss, L_adv = Σ_ut w_ut ℓ_ut / Σ_ut w_ut with ℓ_ut = −log softmax_t(s_u·) and w_ut = c_u · d_ut:

* difficulty: d_ut = (K / max(r_ut, K))^γ, r_ut the rank of target t among the items outside u's training list
  (as H@K ranks), K = 50 (the best-iterate rule's cut-off), γ = 1: 1 inside the top K, falling with the rank;
  d_ut = 0 when t is in u's training list (such users count in no H@K);
* diversity: c_u = n / (C · |C(u)|), C = 10 communities found once by k-means on the real users' L2-normalised
  interaction rows (the best of 5 k-means++ starts drawn from the attack's seed), so every community weighs as much
  as any other.

Everything else is RevAdv's: the surrogate, X₀ (same seed stream), outer step, projection and best-iterate rule.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from attacks.implicit.profiles import PoisonSetting
from attacks.implicit.surrogate import Objective
from central.objectives import interaction_mask

DIFFICULTY_TOP = 50  # K: the rank up to which a user counts as easy
DIFFICULTY_POWER = 1.0  # γ: how fast the weight falls beyond rank K
COMMUNITIES = 10  # C
KMEANS_ITERATIONS = 20
KMEANS_RESTARTS = 5


def difficulty_weights(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor,
                       top: int = DIFFICULTY_TOP, power: float = DIFFICULTY_POWER) -> torch.Tensor:
    """d_ut [n, |T|] from the real users' ``scores`` [n, m] and their training items ``seen`` (bool [n, m])."""
    unseen = scores.masked_fill(seen, -torch.inf)
    target_scores = scores[:, targets]
    ranks = torch.stack([1 + (unseen > target_scores[:, [k]]).sum(1) for k in range(len(targets))], dim=1)
    weights = (top / ranks.clamp(min=top).to(scores.dtype)) ** power
    return weights.masked_fill(seen[:, targets], 0.0)


def communities(rows: np.ndarray, count: int, rng: np.random.Generator, restarts: int = KMEANS_RESTARTS) -> np.ndarray:
    """A community label per row of ``rows``: k-means (scipy's ``kmeans2``, k-means++ start) on the L2-normalised
    rows, the lowest within-community sum of squares of ``restarts`` starts."""
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), np.finfo(float).tiny)
    best, best_cost = np.zeros(len(rows), dtype=np.int64), np.inf
    for _ in range(restarts):
        centers, labels = kmeans2(unit, count, iter=KMEANS_ITERATIONS, minit="++", seed=rng)
        cost = float(((unit - centers[labels]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def community_weights(labels: np.ndarray) -> torch.Tensor:
    """c_u = n / (C · |C(u)|) over the C non-empty communities: every community sums to n / C."""
    _, index, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.from_numpy(len(labels) / (len(sizes) * sizes[index]))


def weighted_softmax_loss(scores: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_ut w_ut (−log softmax_t(s_u·)) / Σ_ut w_ut."""
    return -(weights * torch.log_softmax(scores, dim=1)[:, targets]).sum() / weights.sum()


def community_weights_of(seen: torch.Tensor, seed: int) -> torch.Tensor:
    """c_u of the users whose training items are ``seen`` (bool [n, m]); the k-means++ start from the seed's stream."""
    rng = np.random.default_rng(zlib.crc32(f"{seed}/dada".encode()))
    return community_weights(communities(seen.numpy().astype(np.float64), COMMUNITIES, rng))


def objective(setting: PoisonSetting, seed: int) -> Objective:
    """DADA's L_adv over the real users of ``setting`` (its communities drawn from ``seed``)."""
    seen = interaction_mask(setting.train, setting.num_items)
    per_user = community_weights_of(seen, seed)

    def loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights = per_user.to(scores)[:, None] * difficulty_weights(scores.detach(), targets, seen.to(scores.device))
        return weighted_softmax_loss(scores, targets, weights)
    return loss

"""Metrics of implicit-feedback poisoning (batched over users; rankings over all items with each
user's training items masked).

* Promotion of a target item t: U_t = the real users without t in their training lists;
  rank_u(t) = 1 + the number of unmasked items scored strictly above t (counted among each user's
  max(K) highest scores, on the scorer's device, which gives the same ranks up to max(K));
  H@K_t = |{u ∈ U_t : rank_u(t) ≤ K}| / |U_t|; N@K_t = mean over U_t of 1/log₂(1 + rank_u(t)) when
  rank_u(t) ≤ K, else 0. Reported per target and averaged over the targets.
* The attack papers' alternatives, over the whole target set T: RevAdv's TargetHR@K = the share of the
  evaluated users (real users with a non-empty test list) with at least one target ranked ≤ K (a target in a
  user's training list never is); GradientPassing's Recall@K = the mean, over the users with at least one
  target outside their training list, of |{t ∈ T ∖ train_u : rank_u(t) ≤ K}| / |T ∖ train_u|.
* Popularity band of a target (RevAdv's target groups): its training count's percentile among the items
  with a training interaction (the share of them with a strictly smaller count): head ≥ 95, upper torso
  75–95, lower torso 50–75, tail < 50.
* Utility: Recall@K = |top-K ∩ test_u| / |test_u| and NDCG@K (IDCG over min(|test_u|, K)
  positions), averaged over users with a non-empty test list.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from recsys.data.dataset import Interactions

USER_CHUNK = 1024  # users scored at once
BANDS = (("head", 95.0), ("upper torso", 75.0), ("lower torso", 50.0), ("tail", 0.0))  # (name, lowest percentile)


class AllItemScorer(Protocol):
    def score_all(self, users: torch.Tensor) -> torch.Tensor: ...


class PopularityScorer:
    """Every user gets the items' training counts as scores (the popularity baseline)."""

    def __init__(self, train: Interactions, num_items: int) -> None:
        self.counts = torch.from_numpy(np.bincount(train.items, minlength=num_items)).to(torch.float32)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()


def popularity_bands(train: Interactions, num_items: int, items: np.ndarray) -> list[str]:
    """The popularity band (a name of ``BANDS``) of each of ``items``."""
    counts = np.bincount(train.items, minlength=num_items)
    present = np.sort(counts[counts > 0])
    percentiles = 100.0 * np.searchsorted(present, counts[items], side="left") / len(present)
    return [next(name for name, lowest in BANDS if p >= lowest) for p in percentiles]


def masked_scores(scorer: AllItemScorer, train: Interactions, start: int, stop: int,
                  on_cpu: bool = True) -> torch.Tensor:
    """The scores of users ``start``..``stop`` with their training items at −inf: float64 on the CPU, or
    (``on_cpu`` False) where and as the scorer made them."""
    scores = scorer.score_all(torch.arange(start, stop))
    scores = scores.to(device="cpu", dtype=torch.float64) if on_cpu else scores.clone()
    lo, hi = train.indptr[start], train.indptr[stop]
    rows = torch.from_numpy(train.row_ids()[lo:hi] - start).to(scores.device)
    scores[rows, torch.from_numpy(train.items[lo:hi]).to(scores.device)] = -torch.inf
    return scores


def _target_ranks(scores: torch.Tensor, targets: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank_u(t) [B, T] as float64 on the CPU, exact up to ``top`` and ``top`` + 1 beyond; whether t is open to u).

    Only the ``top`` highest scores are compared: t ranks within ``top`` iff its score is at least the
    ``top``-th highest (ties included), and then every item scored above it is among those ``top``."""
    target_scores = scores[:, targets.to(scores.device)]  # -inf where the user has the target in train
    best = scores.topk(min(top, scores.shape[1]), dim=1).values
    above = (best[:, None, :] > target_scores[:, :, None]).sum(-1)
    rank = torch.where(target_scores >= best[:, -1:], 1 + above, top + 1)
    return rank.to(device="cpu", dtype=torch.float64), torch.isfinite(target_scores).cpu()


def promotion(scorer: AllItemScorer, train: Interactions, targets: np.ndarray,
              ks: tuple[int, ...] = (10, 20, 50), test: Interactions | None = None) -> dict[str, float | list[float]]:
    """H@K and N@K of each target over its U_t (users = the rows of ``train``, the real users);
    keys ``hr@K`` / ``ndcg@K`` (mean over targets) and ``per_target/hr@K`` / ``per_target/ndcg@K``;
    ``any_target_hr@K`` (RevAdv's TargetHR@K over the users with a non-empty ``test`` list, all users
    without ``test``) and ``target_recall@K`` (GradientPassing's Recall@K)."""
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    hits = torch.zeros(len(ks), len(targets_t), dtype=torch.float64)
    gains = torch.zeros_like(hits)
    eligible = torch.zeros(len(targets_t), dtype=torch.float64)
    any_hits, recall_sum = torch.zeros(len(ks), dtype=torch.float64), torch.zeros(len(ks), dtype=torch.float64)
    evaluated_users = recall_users = 0
    has_test = np.ones(train.num_users, dtype=bool) if test is None else test.lengths() > 0
    kk = torch.tensor(ks, dtype=torch.float64)[:, None, None]
    for start in range(0, train.num_users, USER_CHUNK):
        stop = min(start + USER_CHUNK, train.num_users)
        rank, open_pairs = _target_ranks(masked_scores(scorer, train, start, stop, on_cpu=False), targets_t, max(ks))
        within = (rank[None] <= kk) & open_pairs[None]  # [K, B, T]
        hits += within.sum(1)
        gains += torch.where(within, 1.0 / torch.log2(1.0 + rank[None]), 0.0).sum(1)
        eligible += open_pairs.sum(0)
        evaluated = torch.from_numpy(has_test[start:stop])
        any_hits += (within.any(-1) & evaluated).sum(1)
        evaluated_users += int(evaluated.sum())
        open_count = open_pairs.sum(1)
        recall_sum += (within.sum(-1) / open_count.clamp(min=1)).sum(1)  # users without an open target add 0
        recall_users += int((open_count > 0).sum())
    hr, ndcg = hits / eligible.clamp(min=1), gains / eligible.clamp(min=1)
    out: dict[str, float | list[float]] = {}
    for row, k in enumerate(ks):
        out[f"hr@{k}"], out[f"ndcg@{k}"] = float(hr[row].mean()), float(ndcg[row].mean())
        out[f"per_target/hr@{k}"], out[f"per_target/ndcg@{k}"] = hr[row].tolist(), ndcg[row].tolist()
        out[f"any_target_hr@{k}"] = float(any_hits[row]) / max(evaluated_users, 1)
        out[f"target_recall@{k}"] = float(recall_sum[row]) / max(recall_users, 1)
    return out


def utility(scorer: AllItemScorer, train: Interactions, test: Interactions, k: int = 20) -> dict[str, float]:
    """``test/recall@K`` and ``test/ndcg@K`` of the real users (rows of ``train`` and ``test``) on their test items."""
    discounts = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)
    ideal = torch.cumsum(discounts, 0)
    recall = ndcg = 0.0
    users = 0
    for start in range(0, train.num_users, USER_CHUNK):
        stop = min(start + USER_CHUNK, train.num_users)
        scores = masked_scores(scorer, train, start, stop)
        top = scores.topk(k, dim=1).indices
        lo, hi = test.indptr[start], test.indptr[stop]
        truth = torch.zeros(scores.shape, dtype=torch.bool)
        truth[torch.from_numpy(test.row_ids()[lo:hi] - start), torch.from_numpy(test.items[lo:hi])] = True
        found = truth.gather(1, top).to(torch.float64)
        n_test = torch.from_numpy(test.lengths()[start:stop])
        has = n_test > 0
        recall += float((found.sum(1)[has] / n_test[has]).sum())
        ndcg += float(((found * discounts).sum(1)[has] / ideal[n_test[has].clamp(max=k) - 1]).sum())
        users += int(has.sum())
    return {f"test/recall@{k}": recall / max(users, 1), f"test/ndcg@{k}": ndcg / max(users, 1)}

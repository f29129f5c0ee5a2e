"""Top-K ranking metrics, batched over users, exactly as the federated paper defines them.

* HR@K (the paper's code calls it recall): |top-K ∩ test_u| / |test_u|, top-K over items not
  in the user's train set; averaged over users with a non-empty test set.
* Precision@K: |top-K ∩ test_u| / K; NDCG@K with IDCG over min(|test_u|, K) positions.
* ER@K of a target item i: the share of benign users who have not interacted with i (train
  or test) whose top-K over items they have not interacted with (train or test) contains i;
  the reported ER@K is the mean over target items.

``RankingSums`` holds additive numerators and counts, so shards can evaluate their own users
and the server only adds the sums: nothing per user leaves a client. ``ncf_rank_metrics`` scores NCF users
and ranks them in chunks: the one evaluation path of federated shards and of centrally trained NCF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys import native
from recsys.data.dataset import Interactions
from recsys.models.ncf import ITEM_EMBEDDING, ScoreBuffers, Theta, score_all_items

EVAL_CHUNK_CELLS = 4_000_000  # users x items scored and ranked at once during evaluation (16 MB of float32 scores:
# the ranking's few dozen small ops per chunk cost little; with 10x smaller chunks an Amazon evaluation took 1.28 s
# instead of 1.00 s)


@dataclass
class RankingSums:
    """Additive metric numerators/denominators over a set of users."""

    test_users: int
    hr: float
    precision: float
    ndcg: float
    target_hits: np.ndarray  # int64 [len(er_ks), T]: eligible users with target t in their top-K
    target_eligible: np.ndarray  # int64 [T]: users who never interacted with target t

    @classmethod
    def zeros(cls, num_er_ks: int, num_targets: int) -> RankingSums:
        return cls(0, 0.0, 0.0, 0.0, np.zeros((num_er_ks, num_targets), np.int64), np.zeros(num_targets, np.int64))

    def __add__(self, other: RankingSums) -> RankingSums:
        return RankingSums(
            self.test_users + other.test_users,
            self.hr + other.hr,
            self.precision + other.precision,
            self.ndcg + other.ndcg,
            self.target_hits + other.target_hits,
            self.target_eligible + other.target_eligible,
        )

    def finalize(self, k: int, er_ks: tuple[int, ...]) -> dict[str, float]:
        """Averaged metrics keyed ``test/hr@K``, ``test/precision@K``, ``test/ndcg@K``, ``target/er@K``."""
        n = max(self.test_users, 1)
        out = {f"test/hr@{k}": self.hr / n, f"test/precision@{k}": self.precision / n, f"test/ndcg@{k}": self.ndcg / n}
        eligible = np.maximum(self.target_eligible, 1)
        for row, er_k in enumerate(er_ks):
            out[f"target/er@{er_k}"] = float(np.mean(self.target_hits[row] / eligible)) if len(eligible) else 0.0
        return out


def flat_index(rows: Interactions, num_items: int) -> torch.Tensor:
    """Each entry's position ``row * num_items + item`` in a flattened ``[rows, num_items]`` score matrix."""
    return torch.from_numpy(rows.row_ids() * num_items + rows.items)


ER_MARGIN = 16  # top-list entries past max(er_ks): room for the user's test items, which ER@K skips


def hit_sums(hits: torch.Tensor, test: Interactions, k: int, num_er_ks: int, num_targets: int) -> RankingSums:
    """HR/precision/NDCG@K sums from ``hits`` ([B, min(K, M)]: 1 where the user's i-th ranked item is a test item)."""
    n_test = torch.from_numpy(test.lengths()).to(hits.device)
    has_test = n_test > 0
    discounts = 1.0 / torch.log2(torch.arange(hits.shape[1], device=hits.device, dtype=hits.dtype) + 2)
    ideal = torch.cumsum(discounts, 0)[(n_test.clamp(1, hits.shape[1]) - 1)]
    hit_counts = hits.sum(1)[has_test]
    sums = RankingSums.zeros(num_er_ks, num_targets)
    sums.test_users = int(has_test.sum())
    sums.hr = float((hit_counts / n_test[has_test]).sum())
    sums.precision = float(hit_counts.sum() / k)
    sums.ndcg = float(((hits * discounts).sum(1)[has_test] / ideal[has_test]).sum())
    return sums


def add_target_sums(sums: RankingSums, rank: torch.Tensor, eligible: torch.Tensor, er_ks: tuple[int, ...]) -> None:
    """ER@K numerators and denominators from each (user, target)'s ``rank`` among the user's unseen items."""
    for row, er_k in enumerate(er_ks):
        sums.target_hits[row] = ((rank < er_k) & eligible).sum(0).cpu().numpy()
    sums.target_eligible = eligible.sum(0).cpu().numpy().astype(np.int64)


def positions(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Position of each target in each row of ``top`` ([B, L] item ids), L where absent: [B, T]."""
    match = top[:, None, :] == targets[None, :, None]
    return torch.where(match.any(-1), match.to(torch.int8).argmax(-1), top.shape[1])


def top_entries(scores: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(depth, dim=1)``; for float32 CPU scores the native row selection (``recsys.native.top_rows``,
    about 2× faster on random rows, equal scores in item order)."""
    if native.supports(scores) and scores.stride(1) == 1:
        return native.top_rows(scores, depth)
    return scores.topk(depth, dim=1)


def rank_metrics(
    scores: torch.Tensor,
    train: Interactions,
    test: Interactions,
    targets: torch.Tensor,
    k: int,
    er_ks: tuple[int, ...],
) -> RankingSums:
    """Metric sums for the users whose item scores are the rows of ``scores`` ([B, M], finite).

    ``train``/``test`` hold the same B users in the same order. ``scores`` is overwritten (interacted items
    become -inf). One sorted top-L over the items not in train, L = max(K, max(er_ks) + ``ER_MARGIN``), serves
    both metrics: HR/NDCG read its first K entries; a target's ER rank is its position among the listed items
    that are not in test either. That is exact unless the target is absent and fewer than max(er_ks) listed
    items are unseen (many test items near the top): only those users get a second top-K over their unseen
    items. Equal scores: the earlier item first where the native kernels run (``top_entries``), else as
    ``torch.topk`` orders them.
    """
    num_users, num_items = scores.shape
    flat_scores = scores.view(-1)
    flat_scores[flat_index(train, num_items).to(scores.device)] = -torch.inf
    depth = min(num_items, max(k, max(er_ks) + ER_MARGIN) if len(targets) else k)
    top_values, top = top_entries(scores, depth)
    flat_scores[flat_index(test, num_items).to(scores.device)] = -torch.inf  # now every interacted item
    unseen = scores.gather(1, top).isfinite()  # [B, L]: listed items in neither train nor test
    hits = (top_values.isfinite() & ~unseen)[:, : min(k, num_items)]  # listed test items
    sums = hit_sums(hits.to(scores.dtype), test, k, len(er_ks), len(targets))
    if len(targets):
        targets = targets.to(scores.device)
        eligible = scores[:, targets].isfinite()  # [B, T]: never interacted with the target
        position = positions(top, targets)
        unseen_before = torch.cumsum(unseen, 1) - unseen.to(torch.int64)  # unseen listed items ahead of each entry
        rank = unseen_before.gather(1, position.clamp(max=depth - 1))  # [B, T]: rank among unseen items
        absent = position == depth
        rank[absent] = unseen.sum(1, keepdim=True).expand_as(rank)[absent]  # a lower bound: at least this many
        unsure = torch.nonzero((absent & eligible).any(1) & (unseen.sum(1) < max(er_ks))).squeeze(1)
        if len(unsure):
            rank[unsure] = positions(scores[unsure].topk(min(max(er_ks), num_items), dim=1).indices, targets)
        add_target_sums(sums, rank, eligible, er_ks)
    return sums


@torch.no_grad()
def ncf_rank_metrics(
    user_emb: torch.Tensor,
    theta: Theta,
    num_linear: int,
    train: Interactions,
    test: Interactions,
    targets: torch.Tensor,
    k: int,
    er_ks: tuple[int, ...],
    buffers: ScoreBuffers | None = None,
    compiled: bool = False,
) -> RankingSums:
    """Metric sums of the NCF users whose embeddings are the rows of ``user_emb`` (``train``/``test`` hold the
    same users in the same order): every item scored by ``score_all_items`` (``compiled``: its compiled scorer),
    ranked by ``rank_metrics``, in chunks of about ``EVAL_CHUNK_CELLS`` (user, item) pairs."""
    buffers = buffers or ScoreBuffers()
    sums = RankingSums.zeros(len(er_ks), len(targets))
    chunk = max(1, EVAL_CHUNK_CELLS // max(1, theta[ITEM_EMBEDDING].shape[0]))
    for start in range(0, len(user_emb), chunk):
        rows = np.arange(start, min(start + chunk, len(user_emb)))
        scores = score_all_items(user_emb[start : start + len(rows)], theta, num_linear, buffers, compiled)
        sums = sums + rank_metrics(scores, train.subset(rows), test.subset(rows), targets, k, er_ks)
    return sums


def popularity_rank_metrics(train: Interactions, test: Interactions, num_items: int, targets: torch.Tensor, k: int,
                            er_ks: tuple[int, ...]) -> RankingSums:
    """Metric sums of the popularity baseline: every user's items ranked by their training count."""
    counts = torch.from_numpy(np.bincount(train.items, minlength=num_items).astype(np.float32))
    return rank_metrics(counts.expand(train.num_users, -1).clone(), train, test, targets, k, er_ks)

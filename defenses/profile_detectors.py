"""Unsupervised detectors of fake profiles in implicit training data: each gives every user a suspicion score (higher:
more suspicious) from the data alone, as a platform sees them (fake users included), and ``separation`` measures how
well a score sets the fake users apart from the real ones.

* ``length``: fewer items (``defenses.degree_filter`` drops the users below a length);
* ``popularity``: a lower mean training count of the user's items (uniform fillers are mostly unpopular items);
* ``degsim``: DegSim (Chirita, Nejdl & Zamfir 2005, a classic shilling-detection attribute), the mean Jaccard
  similarity to the user's k = 10 most similar other users (fake users share the targets);
* ``nearest``: the Jaccard similarity to the most similar other user (k = 1: a near-copy of another user's list,
  as fake rows started from real users' rows are);
* ``fraudar``: graph-based, FRAUDAR's greedy peeling of the user–item graph (Hooi, Song, Beutel, Shah, Shin &
  Faloutsos, KDD 2016): the later a user is peeled, the more suspicious (fake users clicking the same items form a
  dense block, the last nodes peeling removes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import scipy.sparse
from scipy.stats import mannwhitneyu

from recsys.data import Interactions

NEIGHBOURS = 10
FALSE_POSITIVE_RATE = 0.01
LOG_OFFSET = 5.0  # FRAUDAR's c in its column weight 1 / log(degree + c)
Detector = Callable[[Interactions, int], np.ndarray]  # (training data, number of items) -> a score per user


def length_score(train: Interactions, num_items: int) -> np.ndarray:
    return -train.lengths().astype(np.float64)


def popularity_score(train: Interactions, num_items: int) -> np.ndarray:
    counts = np.bincount(train.items, minlength=num_items).astype(np.float64)
    return -np.bincount(train.row_ids(), weights=counts[train.items], minlength=train.num_users) \
        / np.maximum(train.lengths(), 1)


def degsim_score(train: Interactions, num_items: int, neighbours: int = NEIGHBOURS, chunk: int = 1024) -> np.ndarray:
    """Mean Jaccard similarity to the ``neighbours`` most similar other users, ``chunk`` users at a time."""
    n, lengths = train.num_users, train.lengths().astype(np.float64)
    clicks = scipy.sparse.csr_matrix((np.ones(train.nnz, dtype=np.float32), train.items, train.indptr),
                                     shape=(n, num_items))
    transposed, scores = clicks.T.tocsc(), np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        shared = (clicks[start:stop] @ transposed).toarray()
        jaccard = shared / np.maximum(lengths[start:stop, None] + lengths[None, :] - shared, 1.0)
        jaccard[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not the user itself
        scores[start:stop] = np.partition(jaccard, -neighbours, axis=1)[:, -neighbours:].mean(axis=1)
    return scores


def greedy_peel(train: Interactions, num_items: int, log_offset: float = LOG_OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """FRAUDAR's greedy peeling, each edge weighted 1 / log(its item's degree + ``log_offset``) (its column weighting,
    against camouflage on popular items): every step removes the node, user or item, whose remaining
    edges weigh least. Returns the step at which each node goes (users, then items) and the density f(S) / |S| of the
    nodes S left before each step (the best of these is at least half the densest subgraph's)."""
    n, nodes = train.num_users, train.num_users + num_items
    weight = 1.0 / np.log(np.bincount(train.items, minlength=num_items)[train.items] + log_offset)
    by_item = scipy.sparse.csr_matrix((weight, train.items, train.indptr), shape=(n, num_items)).T.tocsr()
    priority = np.concatenate((np.bincount(train.row_ids(), weights=weight, minlength=n),
                               np.bincount(train.items, weights=weight, minlength=num_items)))
    total, step, density = float(weight.sum()), np.empty(nodes, dtype=np.int64), np.empty(nodes)
    for k in range(nodes):
        density[k] = total / (nodes - k)
        node = int(np.argmin(priority))
        step[node] = k
        total -= priority[node]
        priority[node] = np.inf  # removed: never the minimum again
        if node < n:
            edges = slice(train.indptr[node], train.indptr[node + 1])
            priority[n + train.items[edges]] -= weight[edges]
        else:
            edges = slice(by_item.indptr[node - n], by_item.indptr[node - n + 1])
            priority[by_item.indices[edges]] -= by_item.data[edges]
    return step, density


def fraudar_score(train: Interactions, num_items: int) -> np.ndarray:
    """The share of the graph's nodes peeled before the user (``greedy_peel``)."""
    step, _ = greedy_peel(train, num_items)
    return step[:train.num_users] / float(len(step))


DETECTORS: dict[str, Detector] = {
    "length": length_score,
    "popularity": popularity_score,
    "degsim": degsim_score,
    "nearest": partial(degsim_score, neighbours=1),
    "fraudar": fraudar_score,
}


def flag_threshold(real_scores: np.ndarray) -> float:
    """The score that only ``FALSE_POSITIVE_RATE`` of the real users exceed: users scored above it are flagged."""
    return float(np.quantile(real_scores, 1.0 - FALSE_POSITIVE_RATE, method="higher"))


def separation(scores: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """ROC AUC of the fake users (mask ``fake``) against the real ones (ties count half) and the share of fake users
    flagged at the real users' ``flag_threshold`` (caught where 1 % of the real users are)."""
    real_scores, fake_scores = scores[~fake], scores[fake]
    auc = mannwhitneyu(fake_scores, real_scores).statistic / (len(fake_scores) * len(real_scores))
    return {"auc": float(auc), "caught": float((fake_scores > flag_threshold(real_scores)).mean())}

"""Unsupervised detectors of fake profiles in implicit training data: each gives every user a suspicion score (higher:
more suspicious) from the data alone, as a platform sees them (fake users included), and ``separation`` measures how
well a score sets the fake users apart from the real ones.

* ``length``: fewer items (``defenses.degree_filter`` drops the users below a length);
* ``popularity``: a lower mean training count of the user's items (uniform fillers are mostly unpopular items);
* ``degsim``: DegSim (Chirita, Nejdl & Zamfir 2005, a classic shilling-detection attribute), the mean Jaccard
  similarity to the user's k = 10 most similar other users (fake users share the targets);
* ``nearest``: the Jaccard similarity to the most similar other user (k = 1: a near-copy of another user's list,
  as fake rows started from real users' rows are).
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


DETECTORS: dict[str, Detector] = {
    "length": length_score,
    "popularity": popularity_score,
    "degsim": degsim_score,
    "nearest": partial(degsim_score, neighbours=1),
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

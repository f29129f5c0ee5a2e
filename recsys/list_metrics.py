"""Metrics of given top-K lists, batched over users: Agreement (Agr@K) and Recall@K.

* Agr@K of user i (the stealing paper's eq. 3, after Yue et al. 2021): |R_i^target ∩ R_i^clone| / K,
  averaged over users.
* Recall@K of user i: |R_i ∩ test_i| / |test_i|, averaged over users with a non-empty test set.
"""

from __future__ import annotations

import torch


def agreement(target_lists: torch.Tensor, clone_lists: torch.Tensor) -> float:
    """Mean Agr@K of two [U, K] item-id lists (each row holds K distinct items)."""
    if target_lists.shape != clone_lists.shape or target_lists.ndim != 2:
        raise ValueError(f"agreement needs two [U, K] lists of equal shape, got {tuple(target_lists.shape)} "
                         f"and {tuple(clone_lists.shape)}")
    if target_lists.shape[0] == 0:
        raise ValueError("agreement needs at least one user")
    common = (target_lists[:, :, None] == clone_lists[:, None, :]).any(-1).sum(1)
    return float((common.to(torch.float64) / target_lists.shape[1]).mean())


def recall(lists: torch.Tensor, test_mask: torch.Tensor) -> float:
    """Mean Recall@K of [U, K] lists against the boolean [U, M] test-item mask (users with tests only)."""
    n_test = test_mask.sum(1)
    hits = test_mask.gather(1, lists).sum(1)
    has_test = n_test > 0
    return float((hits[has_test].to(torch.float64) / n_test[has_test]).mean())

"""Top-K metrics of an explicit-rating model over its real users (batched over users).

Each user's ranking covers the items the user has not rated (train, validation and test
ratings of real users are known to the evaluator; the held-out test item stays rankable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from central.rating_mf import MatrixFactorization
from central.rating_split import RatingSplit

USER_BLOCK = 1024  # users scored at once


@dataclass(frozen=True)
class TargetReport:
    """HR@K of the target items, test HR@K and the mean rank (0 = top) of the targets."""

    target_hr: float
    test_hr: float
    target_rank: float

    def as_dict(self) -> dict[str, float]:
        return {"target_hr": self.target_hr, "test_hr": self.test_hr, "target_rank": self.target_rank}


def evaluate_targets(model: MatrixFactorization, split: RatingSplit, targets: np.ndarray, k: int = 50) -> TargetReport:
    """Target HR@k over the (real user, target) pairs where the user has not rated the target,
    test HR@k of each real user's held-out item, and the mean rank of the targets over the same pairs."""
    users = split.num_real_users
    known = torch.zeros(users, split.num_items, dtype=torch.bool)  # excluded from rankings
    for part in (split.train, split.valid):
        real = part.users < users
        known[part.users[real], part.items[real]] = True
    rated = known.clone()
    rated[split.test.users, split.test.items] = True
    targets_t = torch.as_tensor(targets, dtype=torch.int64)
    test_items = torch.full((users,), -1, dtype=torch.int64)
    test_items[split.test.users] = split.test.items
    hits = ranks = eligible = test_hits = 0.0
    for start in range(0, users, USER_BLOCK):
        rows = torch.arange(start, min(users, start + USER_BLOCK))
        scores = model.scores(rows).masked_fill_(known[rows], float("-inf"))
        top = scores.topk(k, dim=1).indices
        target_scores = scores[:, targets_t]
        rank = (scores.unsqueeze(1) > target_scores.unsqueeze(2)).sum(2).to(torch.float64)  # [B, T]
        open_pairs = ~rated[rows][:, targets_t]
        in_top = (top.unsqueeze(1) == targets_t.view(1, -1, 1)).any(2)
        hits += float((in_top & open_pairs).sum())
        ranks += float((rank * open_pairs).sum())
        eligible += float(open_pairs.sum())
        test_hits += float((top == test_items[rows].unsqueeze(1)).any(1).sum())
    return TargetReport(hits / max(1.0, eligible), test_hits / users, ranks / max(1.0, eligible))


def robustness_improvement(hr_defense: float, hr_origin: float, hr_attack: float) -> float:
    """RI = 1 − (HR_defense − HR_origin) / (HR_attack − HR_origin); NaN (undefined) when the attack
    did not raise HR above the origin."""
    gain = hr_attack - hr_origin
    return float("nan") if gain <= 0 else 1.0 - (hr_defense - hr_origin) / gain

"""The stealing loss (eqs. 9–12) that extracts a queried top-K list R_i^target.

L_S^i = L_r^i + L_p^i with the ranking loss L_r^i = Σ_{j ∈ R_i} L(r_ij, r_ij') over consecutive
ranks (j' follows j) and the positive-item loss L_p^i = Σ_{j ∈ R_i} Σ_{k ∈ n_j} L(r_ij, r_ik) over
sampled negatives n_j. The paper's PTQ/PTAQ use L_r = BPR (eq. 4), L_p = margin hinge (eq. 9,
m = 0.5) ("BPR+Hinge"); QSD uses hinge for both. Table 7 compares all four pairings.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from central.objectives import BATCH_SIZE, Batch, Scorer, pairwise_bpr, sample_negatives

MARGIN = 0.5


def margin_hinge(positive: torch.Tensor, negative: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """L_Hinge(r_ip, r_in) = max(0, m − (r_ip − r_in)) (eq. 9), element-wise."""
    return torch.relu(margin - (positive - negative))


PAIR_LOSSES = ("bpr", "hinge")


def pair_loss(name: str, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    if name == "bpr":
        return pairwise_bpr(positive, negative)
    if name == "hinge":
        return margin_hinge(positive, negative, margin)
    raise ValueError(f"unknown stealing pair loss {name!r}; choose one of {', '.join(PAIR_LOSSES)}")


def stealing_loss(ranked: torch.Tensor, has_next: torch.Tensor, following: torch.Tensor, negatives: torch.Tensor,
                  ranking: str = "bpr", positive: str = "hinge", margin: float = MARGIN) -> torch.Tensor:
    """Σ over list entries of L_r(r_ij, r_ij') (where j has a successor) + Σ_k L_p(r_ij, r_ik).

    ``ranked`` [B]: r_ij; ``following`` [B]: r_ij' (ignored where ``has_next`` is False);
    ``negatives`` [B, n]: r_ik of the sampled negatives of each entry.
    """
    ranking_terms = pair_loss(ranking, ranked, following, margin) * has_next
    positive_terms = pair_loss(positive, ranked[:, None], negatives, margin)
    return ranking_terms.sum() + positive_terms.sum()


class StealingObjective:
    """Each entry (user i, rank t) of the queried lists once per epoch, with ``negatives`` items
    sampled from those neither in R_i^target nor interacted with; loss = L_S per entry (mean)."""

    def __init__(self, lists: torch.Tensor, interacted: torch.Tensor, ranking: str = "bpr", positive: str = "hinge",
                 margin: float = MARGIN, negatives: int = 1, batch_size: int = BATCH_SIZE) -> None:
        for name in (ranking, positive):
            if name not in PAIR_LOSSES:
                raise ValueError(f"unknown stealing pair loss {name!r}; choose one of {', '.join(PAIR_LOSSES)}")
        if lists.ndim != 2 or lists.shape[1] < 2 or lists.shape[0] != interacted.shape[0]:
            raise ValueError(f"need [U, K >= 2] lists for the U rows of the interaction mask, got "
                             f"{tuple(lists.shape)} and {tuple(interacted.shape)}")
        self.lists = lists
        self.forbidden = interacted.clone()
        self.forbidden.scatter_(1, lists, True)
        self.ranking, self.positive, self.margin = ranking, positive, margin
        self.negatives, self.batch_size = negatives, batch_size

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        num_users, k = self.lists.shape
        order = torch.randperm(num_users * k, generator=generator)
        for start in range(0, len(order), self.batch_size):
            entries = order[start : start + self.batch_size]
            users, ranks = entries // k, entries % k
            has_next = ranks < k - 1
            following = self.lists[users, torch.where(has_next, ranks + 1, ranks)]
            negatives = sample_negatives(self.forbidden, users, self.negatives, generator)
            yield users, self.lists[users, ranks], has_next, following, negatives

    def loss(self, scorer: Scorer, batch: Batch) -> torch.Tensor:
        users, items, has_next, following, negatives = batch
        total = stealing_loss(scorer.score(users, items), has_next, scorer.score(users, following),
                              scorer.score(users[:, None].expand_as(negatives), negatives),
                              self.ranking, self.positive, self.margin)
        return total / len(users)

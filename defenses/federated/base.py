"""What every grouped aggregation rule shares: forming the groups, the f policy, the fallback, the report.

FedRec semantics (docs/federated-defenses.md):
- scope ``row`` (default): each item row j is aggregated over the n_j clients that uploaded it, never
  zero-padded (a zero-padded median would erase every rare item's update); each MLP tensor is one group of
  whole per-client vectors (or one group per output neuron, ``mlp_grouping = "neuron"``).
- scope ``vector``: each client's whole upload (item rows zero-filled, then the MLP) is one vector.
- every rule returns its step on the sum scale: group g gives n_g × its robust mean, so η means the same
  for every rule and ``sum`` is eq. 6.
- f, the number of malicious uploads a group is assumed to hold, follows ``config.assumed_malicious``:
  ``fraction:β`` (⌊β·n_g⌋), ``oracle`` (the true count: an upper bound for any defense) or ``bound:F``
  (min(F, ⌊(n_g − 1)/2⌋)). A group with too few uploads for the rule at its f falls back to the
  coordinate-wise median, counted in the report (never a silent sum).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from federation.uploads import ClientUploads
from recsys.models.ncf import ITEM_EMBEDDING, Theta
from server.aggregation import Aggregate, AggregationRule, RoundInfo

WHOLE_UPLOAD = "upload"  # ``Groups.tensor`` in scope ``vector``: each client's whole upload is one vector


@dataclass
class Groups:
    """Padded groups of uploaded vectors: ``values[g, k]`` is the k-th upload of group g for k < counts[g]
    (in client-id order); the rest is zero padding."""

    values: torch.Tensor  # [G, N, D]
    counts: torch.Tensor  # int64 [G]
    malicious: torch.Tensor  # bool [G, N], ground truth (padding False)
    tensor: str = WHOLE_UPLOAD  # the Θ tensor the groups belong to (WHOLE_UPLOAD in scope ``vector``)
    rows: torch.Tensor | None = None  # int64 [G]: each group's item row / neuron in that tensor; None: the whole tensor

    @property
    def valid(self) -> torch.Tensor:
        """[G, N] mask of real uploads."""
        return torch.arange(self.values.shape[1], device=self.counts.device)[None, :] < self.counts[:, None]

    def subset(self, mask: torch.Tensor) -> Groups:
        return Groups(self.values[mask], self.counts[mask], self.malicious[mask], self.tensor,
                      None if self.rows is None else self.rows[mask])


@dataclass
class Combined:
    """A rule's output for a batch of groups: sum-scale vectors and which uploads it used."""

    sums: torch.Tensor  # [G, D]
    used: torch.Tensor  # bool [G, N]: uploads that entered the result (all valid ones for non-selecting rules)


def sort_last_(values: torch.Tensor) -> torch.Tensor:
    """``values`` (contiguous) sorted in place along the last axis. On the CPU numpy's SIMD sort does it, an order of
    magnitude faster than ``torch.sort`` on these many short rows (equal values, so the same result)."""
    if values.device.type == "cpu":
        values.numpy().sort(axis=-1)
        return values
    return values.copy_(values.sort(dim=-1).values)


def sorted_values(groups: Groups) -> torch.Tensor:
    """Each coordinate's values in ascending order along the last axis, ``[G, D, N]``, padding (+inf) last."""
    columns = groups.values.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # a copy even where the
    # transpose is contiguous already (a [B, 1] bias), so sorting never permutes the clients' uploads
    return sort_last_(columns.masked_fill_(~groups.valid[:, None, :], float("inf")))


def at_rank(ordered: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """``ordered[g, :, rank[g]]`` for every group g ([G, D])."""
    return ordered.gather(2, rank[:, None, None].expand(-1, ordered.shape[1], 1)).squeeze(2)


def coordinate_median(groups: Groups) -> torch.Tensor:
    """Coordinate-wise median per group; for even n_g the mean of the two middle values."""
    ordered = sorted_values(groups)
    n = groups.counts.clamp(min=1)
    return (at_rank(ordered, (n - 1) // 2) + at_rank(ordered, n // 2)) / 2


def assumed_malicious(policy: str, groups: Groups) -> torch.Tensor:
    """f per group from the f policy (see the module docstring)."""
    kind, _, value = policy.partition(":")
    n = groups.counts
    if kind == "oracle":
        return groups.malicious.sum(1)
    if kind == "fraction":
        return torch.floor(n.double() * float(value) + 1e-9).long()
    return torch.minimum(torch.full_like(n, int(value)), ((n - 1) // 2).clamp(min=0))


def stable_order(keys: torch.Tensor, bound: int) -> torch.Tensor:
    """``torch.argsort(keys, stable=True)`` for keys in [0, bound); on the CPU with bound <= 2^16, numpy's radix sort
    of 16-bit keys (the same order, several times faster)."""
    if keys.device.type == "cpu" and bound <= 1 << 16:
        return torch.from_numpy(np.argsort(keys.numpy().astype(np.uint16), kind="stable"))
    return torch.argsort(keys, stable=True)


class GroupedRule(AggregationRule):
    """A rule defined on groups of vectors (``combine``); this class forms the groups and writes the step."""

    mlp_grouping = "tensor"  # "tensor": one group per MLP tensor; "neuron": a weight matrix's rows are groups

    @abstractmethod
    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        """The sum-scale result of every group (n_g × the rule's robust mean) given f per group."""

    def min_count(self, f: torch.Tensor) -> torch.Tensor:
        """The fewest uploads a group needs for the rule at f; smaller groups fall back to the median."""
        return torch.ones_like(f)

    # ---- the grouping ---------------------------------------------------------------------------------
    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        step = {name: torch.zeros(shape, dtype=uploads.row_values.dtype, device=uploads.row_values.device)
                for name, shape in self.spec.shapes().items()}
        self.report: dict[str, float] = {"fallback_groups": 0, "fallback_target_rows": 0, "dropped_uploads": 0,
                                         "dropped_malicious_uploads": 0}
        if uploads.num_clients == 0:
            return Aggregate(step, self.report)
        malicious = torch.as_tensor(info.malicious, dtype=torch.bool, device=uploads.row_values.device)
        if self.config.aggregation_scope == "vector":
            vectors = torch.cat([uploads.dense_rows(self.spec.num_items).flatten(1)]
                                + [v.flatten(1) for v in uploads.dense.values()], dim=1)
            count = torch.tensor([uploads.num_clients], device=vectors.device)
            flat = self._run(Groups(vectors[None], count, malicious[None]))[0]
            offset = 0
            for name in [ITEM_EMBEDDING, *uploads.dense]:
                size = step[name].numel()
                step[name] = flat[offset:offset + size].view_as(step[name])
                offset += size
            return Aggregate(step, self.report)
        self._aggregate_rows(uploads, malicious, info.targets, step[ITEM_EMBEDDING])
        for name, value in uploads.dense.items():
            by_neuron = self.mlp_grouping == "neuron" and value.dim() == 3
            vectors = value.transpose(0, 1) if by_neuron else value.flatten(1)[None]
            count = torch.full((vectors.shape[0],), uploads.num_clients, device=vectors.device)
            rows = torch.arange(vectors.shape[0], device=vectors.device) if by_neuron else None
            groups = Groups(vectors, count, malicious[None].expand(vectors.shape[0], -1), name, rows)
            step[name] = self._run(groups).view_as(step[name])
        return Aggregate(step, self.report)

    def _aggregate_rows(self, uploads: ClientUploads, malicious: torch.Tensor, targets: torch.Tensor,
                        out: torch.Tensor) -> None:
        """Each touched item row over its uploaders, in buckets of similar n_j (at most 2x padding); an upload's
        slot in its row is its rank among the row's uploaders in client-id order."""
        items, dim, num_items = uploads.row_items, uploads.row_values.shape[1], self.spec.num_items
        counts = torch.bincount(items, minlength=num_items)
        bucket = torch.where(counts > 0, torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), 0)
        # entries ordered by (bucket, item), client-id order within an item: each bucket is one slice
        order = stable_order(bucket.index_select(0, items) * num_items + items, int(bucket.max() + 1) * num_items)
        items = items.index_select(0, order)
        values = uploads.row_values.index_select(0, order)
        entry_malicious = malicious.index_select(0, uploads.row_owner().index_select(0, order))
        first = torch.zeros_like(counts)
        is_target = torch.zeros(num_items, dtype=torch.bool, device=items.device)
        is_target[targets.to(items.device)] = True
        start = 0
        for b in torch.unique(bucket[counts > 0]).tolist():
            rows = torch.nonzero((bucket == b) & (counts > 0)).squeeze(1)
            row_counts = counts[rows]
            stop, size = start + int(row_counts.sum()), int(row_counts.max())
            local = torch.zeros_like(counts)  # each bucket item's group, and its first entry in the slice
            local[rows] = torch.arange(len(rows), device=rows.device)
            first[rows] = torch.cumsum(row_counts, 0) - row_counts
            part = items[start:stop]
            rank = torch.arange(stop - start, device=items.device) - first.index_select(0, part)
            slot = local.index_select(0, part) * size + rank
            padded = values.new_zeros((len(rows) * size, dim)).index_copy_(0, slot, values[start:stop])
            flags = torch.zeros(len(rows) * size, dtype=torch.bool, device=values.device).index_copy_(
                0, slot, entry_malicious[start:stop])
            groups = Groups(padded.view(len(rows), size, dim), counts[rows], flags.view(len(rows), size), ITEM_EMBEDDING,
                            rows)
            out[rows] = self._run(groups, is_target[rows])
            start = stop

    def _run(self, groups: Groups, target_groups: torch.Tensor | None = None) -> torch.Tensor:
        """``combine`` where the rule is defined, the coordinate median elsewhere; updates the report."""
        f = assumed_malicious(self.config.assumed_malicious, groups)
        fallback = groups.counts < self.min_count(f)
        if not bool(fallback.any()):  # the common case: no copy of the groups
            combined = self.combine(groups, f)
            sums, used = combined.sums, combined.used
        else:
            sums = groups.values.new_zeros((groups.values.shape[0], groups.values.shape[2]))
            used = groups.valid.clone()
            if not bool(fallback.all()):
                combined = self.combine(groups.subset(~fallback), f[~fallback])
                sums[~fallback], used[~fallback] = combined.sums, combined.used
            part = groups.subset(fallback)
            sums[fallback] = coordinate_median(part) * part.counts[:, None].to(sums.dtype)
        dropped = groups.valid & ~used
        self.report["fallback_groups"] += int(fallback.sum())
        if target_groups is not None:
            self.report["fallback_target_rows"] += int((fallback & target_groups).sum())
        self.report["dropped_uploads"] += int(dropped.sum())
        self.report["dropped_malicious_uploads"] += int((dropped & groups.malicious).sum())
        return sums


def trimmed_sum(ordered: torch.Tensor, counts: torch.Tensor, trim: torch.Tensor) -> torch.Tensor:
    """n_g × the mean of the sorted values ``ordered`` ([G, D, N], padding last) at ranks trim_g .. n_g − trim_g − 1,
    summed directly (as Flower's mean of the sorted slice)."""
    ranks = torch.arange(ordered.shape[2], device=ordered.device)
    dropped = (ranks[None, :] < trim[:, None]) | (ranks[None, :] >= (counts - trim)[:, None])
    kept = ordered.masked_fill(dropped[:, None, :], 0).sum(2)
    return kept * (counts.to(kept.dtype) / (counts - 2 * trim).clamp(min=1).to(kept.dtype))[:, None]


def selected(groups: Groups, chosen: torch.Tensor) -> Combined:
    """n_g × the mean of the uploads ``chosen`` ([G, N] bool) selects."""
    weights = chosen.to(groups.values.dtype)
    total = (groups.values * weights[:, :, None]).sum(1)
    scale = groups.counts.to(total.dtype) / weights.sum(1).clamp(min=1)
    return Combined(total * scale[:, None], chosen)

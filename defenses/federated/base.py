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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from federation.config import SimulationConfig
from federation.uploads import ClientUploads
from recsys import native
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec
from server.aggregation import Aggregate, AggregationRule, RoundInfo

WHOLE_UPLOAD = "upload"  # ``Groups.tensor`` in scope ``vector``: each client's whole upload is one vector
MLP_TENSORS = "mlp"  # ``Groups.tensor`` of a coordinate-wise rule's one group of all MLP tensors


@dataclass
class Groups:
    """Padded groups of uploaded vectors: ``values[g, k]`` is the k-th upload of group g for k < counts[g]
    (in client-id order); the rest is zero padding."""

    values: torch.Tensor  # [G, N, D]
    counts: torch.Tensor  # int64 [G]
    malicious: torch.Tensor  # bool [G, N], ground truth (padding False)
    tensor: str = WHOLE_UPLOAD  # the Θ tensor the groups belong to (WHOLE_UPLOAD in scope ``vector``, MLP_TENSORS)
    rows: torch.Tensor | None = None  # int64 [G]: each group's item row / neuron in that tensor; None: the whole tensor
    columns: torch.Tensor | None = None  # [G, D, N]: each coordinate's values, +inf padding, in any order along N
    # (``sorted_values`` sorts it in place); built with the values for the coordinate-wise rules (``coordinatewise``)

    @cached_property
    def valid(self) -> torch.Tensor:
        """[G, N] mask of real uploads."""
        return torch.arange(self.values.shape[1], device=self.counts.device)[None, :] < self.counts[:, None]

    def subset(self, mask: torch.Tensor) -> Groups:
        return Groups(self.values[mask], self.counts[mask], self.malicious[mask], self.tensor,
                      None if self.rows is None else self.rows[mask],
                      None if self.columns is None else self.columns[mask])


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
    if groups.columns is not None:
        return sort_last_(groups.columns)
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


def row_groups(uploads: ClientUploads, malicious: torch.Tensor, num_items: int, columns: bool,
               buffers: native.Buffers | None = None) -> Iterator[Groups]:
    """Each touched item row's uploads as one group, in buckets of rows whose n_j round up to the same power of two
    (at most 2x padding; rows ascending within a bucket); an upload's slot in its row is its rank among the row's
    uploaders in client-id order. ``columns``: the groups also carry their ``[D, N]`` columns where the native
    kernel builds them (float32 CPU), in ``buffers`` if given (valid until their next use)."""
    items, values, device = uploads.row_items, uploads.row_values, uploads.row_items.device
    counts = torch.bincount(items, minlength=num_items).cpu().numpy()  # the bookkeeping per row: numpy, on the CPU
    touched = np.flatnonzero(counts)
    if not len(touched):
        return
    bucket = np.frexp(counts[touched] - 1)[1]  # ⌈log2 n_j⌉
    order = np.argsort(bucket, kind="stable")
    rows, bucket = touched[order], bucket[order]
    row_counts = counts[rows]
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    per_bucket = np.diff(starts, append=len(rows))
    sizes = np.maximum.reduceat(row_counts, starts)
    slot_size = np.repeat(sizes, per_bucket)
    first_slot = np.cumsum(slot_size) - slot_size
    entry_malicious = malicious.index_select(0, uploads.row_owner())
    flat_columns = None
    if native.supports(values):
        first, size = np.full(num_items, -1), np.zeros(num_items, dtype=np.int64)
        first[rows], size[rows] = first_slot, slot_size
        padded, flags, flat_columns = native.group_rows(items, values, entry_malicious, torch.from_numpy(first),
                                                        torch.from_numpy(size), int(slot_size.sum()), columns, buffers)
    else:
        padded, flags = _scatter_rows(uploads, entry_malicious, num_items, *(torch.from_numpy(a).to(device) for a in (
            rows, bucket.astype(np.int64), row_counts, first_slot)), int(slot_size.sum()))
    start, dim, per_bucket = 0, values.shape[1], per_bucket.tolist()
    for size_b, group_rows, group_counts in zip(sizes.tolist(), torch.from_numpy(rows).to(device).split(per_bucket),
                                                torch.from_numpy(row_counts).to(device).split(per_bucket)):
        stop = start + len(group_rows) * size_b
        group_columns = None if flat_columns is None else flat_columns[start * dim:stop * dim].view(-1, dim, size_b)
        yield Groups(padded[start:stop].view(-1, size_b, dim), group_counts, flags[start:stop].view(-1, size_b),
                     ITEM_EMBEDDING, group_rows, group_columns)
        start = stop


def _scatter_rows(uploads: ClientUploads, entry_malicious: torch.Tensor, num_items: int, rows: torch.Tensor,
                  bucket: torch.Tensor, row_counts: torch.Tensor, first_slot: torch.Tensor,
                  num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``native.group_rows`` in torch ops: the entries ordered by (bucket, item), client-id order within an item,
    then each copied to its row's first slot plus its rank among the row's entries."""
    items, values = uploads.row_items, uploads.row_values
    bucket_of = torch.zeros(num_items, dtype=torch.int64, device=items.device).index_copy_(0, rows, bucket)
    entry_order = stable_order(bucket_of.index_select(0, items) * num_items + items, (int(bucket[-1]) + 1) * num_items
                               if len(bucket) else 1)
    sorted_items = items.index_select(0, entry_order)
    first_entry = torch.zeros_like(bucket_of).index_copy_(0, rows, torch.cumsum(row_counts, 0) - row_counts)
    first = torch.zeros_like(bucket_of).index_copy_(0, rows, first_slot)
    rank = torch.arange(len(items), device=items.device) - first_entry.index_select(0, sorted_items)
    slot = first.index_select(0, sorted_items) + rank
    padded = values.new_zeros((num_slots, values.shape[1])).index_copy_(0, slot, values.index_select(0, entry_order))
    flags = torch.zeros(num_slots, dtype=torch.bool, device=items.device).index_copy_(
        0, slot, entry_malicious.index_select(0, entry_order))
    return padded, flags


class GroupedRule(AggregationRule):
    """A rule defined on groups of vectors (``combine``); this class forms the groups and writes the step."""

    mlp_grouping = "tensor"  # "tensor": one group per MLP tensor; "neuron": a weight matrix's rows are groups
    coordinatewise = False  # True: ``combine`` treats each coordinate on its own (median, trimmed mean), so the
    # item-row groups come with their columns and all MLP tensors form one group (the same result as one per tensor)

    def __init__(self, config: SimulationConfig, spec: NCFSpec) -> None:
        super().__init__(config, spec)
        self.buffers = native.Buffers()  # the memory of each round's item-row groups

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
        if self.coordinatewise:
            vectors = torch.cat([value.flatten(1) for value in uploads.dense.values()], dim=1)
            count = torch.tensor([uploads.num_clients], device=vectors.device)
            flat = self._run(Groups(vectors[None], count, malicious[None], MLP_TENSORS))[0]
            for name, part in zip(uploads.dense, flat.split([step[name].numel() for name in uploads.dense])):
                step[name] = part.view_as(step[name])
            return Aggregate(step, self.report)
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
        """Each touched item row over its uploaders (``row_groups``)."""
        is_target = torch.zeros(self.spec.num_items, dtype=torch.bool, device=out.device)
        is_target[targets.to(out.device)] = True
        for groups in row_groups(uploads, malicious, self.spec.num_items, self.coordinatewise, self.buffers):
            out[groups.rows] = self._run(groups, is_target[groups.rows])

    def _run(self, groups: Groups, target_groups: torch.Tensor | None = None) -> torch.Tensor:
        """``combine`` where the rule is defined, the coordinate median elsewhere; updates the report."""
        f = assumed_malicious(self.config.assumed_malicious, groups)
        fallback = groups.counts < self.min_count(f)
        if not bool(fallback.any()):  # the common case: no copy of the groups
            combined = self.combine(groups, f)
            sums, used = combined.sums, combined.used
            if used is groups.valid:  # nothing dropped (the non-selecting rules)
                return sums
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
    summed directly (as Flower's mean of the sorted slice; in rank order by the native kernel on float32 CPU values).
    May overwrite the other ranks of ``ordered``."""
    if native.supports(ordered):
        kept = native.range_sums(ordered, trim, counts - trim)
    else:
        ranks = torch.arange(ordered.shape[2], device=ordered.device)
        dropped = (ranks[None, :] < trim[:, None]) | (ranks[None, :] >= (counts - trim)[:, None])
        kept = ordered.masked_fill_(dropped[:, None, :], 0).sum(2)
    return kept * (counts.to(kept.dtype) / (counts - 2 * trim).clamp(min=1).to(kept.dtype))[:, None]


def selected(groups: Groups, chosen: torch.Tensor) -> Combined:
    """n_g × the mean of the uploads ``chosen`` ([G, N] bool) selects."""
    weights = chosen.to(groups.values.dtype)
    total = (groups.values * weights[:, :, None]).sum(1)
    scale = groups.counts.to(total.dtype) / weights.sum(1).clamp(min=1)
    return Combined(total * scale[:, None], chosen)

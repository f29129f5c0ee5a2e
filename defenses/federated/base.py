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
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec, Theta
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

    @cached_property
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


def padded_columns(groups: Groups) -> torch.Tensor:
    """A copy of each group's values per coordinate, ``[G, D, N]``, padding +inf (a copy even where the transpose is
    contiguous already, as for a [B, 1] bias, so that sorting it never permutes the clients' uploads)."""
    columns = groups.values.transpose(1, 2).clone(memory_format=torch.contiguous_format)
    return columns.masked_fill_(~groups.valid[:, None, :], float("inf"))


def sorted_values(groups: Groups) -> torch.Tensor:
    """Each coordinate's values in ascending order along the last axis, ``[G, D, N]``, padding (+inf) last."""
    return sort_last_(padded_columns(groups))


def at_rank(ordered: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """``ordered[g, :, rank[g]]`` for every group g ([G, D])."""
    return ordered.gather(2, rank[:, None, None].expand(-1, ordered.shape[1], 1)).squeeze(2)


def sorted_median(ordered: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each coordinate's median from its sorted values ``ordered`` ``[G, D, N]`` (n_g = ``counts``, padding last);
    for even n_g the mean of the two middle values."""
    n = counts.clamp(min=1)
    return (at_rank(ordered, (n - 1) // 2) + at_rank(ordered, n // 2)) / 2


def coordinate_median(groups: Groups) -> torch.Tensor:
    """Coordinate-wise median per group; for even n_g the mean of the two middle values."""
    return sorted_median(sorted_values(groups), groups.counts)


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


@dataclass
class RowLayout:
    """Where each touched item row's uploads go: rows in buckets of rows whose n_j round up to the same power of two
    (at most 2x padding; rows ascending within a bucket), each row a group of as many slots as its bucket's largest
    n_j; an upload's slot in its row is its rank among the row's uploaders in client-id order."""

    rows: np.ndarray  # [R] item rows, bucket by bucket
    counts: np.ndarray  # [R] n_j
    bucket: np.ndarray  # [R] ⌈log2 n_j⌉
    sizes: list[int]  # slots per group, per bucket
    per_bucket: list[int]  # rows per bucket
    first_slot: np.ndarray  # [R] each row's first slot
    num_slots: int

    @classmethod
    def of(cls, items: torch.Tensor, num_items: int) -> RowLayout:
        counts = torch.bincount(items, minlength=num_items).cpu().numpy()  # bookkeeping per row: numpy, on the CPU
        touched = np.flatnonzero(counts)
        bucket = np.frexp(counts[touched] - 1)[1]  # ⌈log2 n_j⌉
        order = np.argsort(bucket, kind="stable")
        rows, bucket = touched[order], bucket[order]
        starts = np.flatnonzero(np.diff(bucket, prepend=-1))
        per_bucket = np.diff(starts, append=len(rows))
        sizes = np.maximum.reduceat(counts[rows], starts) if len(rows) else np.zeros(0, dtype=np.int64)
        slot_size = np.repeat(sizes, per_bucket)
        return cls(rows, counts[rows], bucket, sizes.tolist(), per_bucket.tolist(), np.cumsum(slot_size) - slot_size,
                   int(slot_size.sum()))

    def native_slots(self, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``first`` and ``size`` per item (−1 and 0 where untouched), as ``native.group_rows`` takes them."""
        first, size = np.full(num_items, -1), np.zeros(num_items, dtype=np.int64)
        first[self.rows], size[self.rows] = self.first_slot, np.repeat(self.sizes, self.per_bucket)
        return torch.from_numpy(first), torch.from_numpy(size)

    def buckets(self, device: torch.device) -> Iterator[tuple[slice, int, torch.Tensor, torch.Tensor]]:
        """Per bucket: its slots, its group size, its rows and their n_j."""
        start, rows, counts = 0, torch.from_numpy(self.rows).to(device), torch.from_numpy(self.counts).to(device)
        for size, bucket_rows, bucket_counts in zip(self.sizes, rows.split(self.per_bucket),
                                                    counts.split(self.per_bucket)):
            stop = start + len(bucket_rows) * size
            yield slice(start, stop), size, bucket_rows, bucket_counts
            start = stop


def row_groups(uploads: ClientUploads, malicious: torch.Tensor, num_items: int,
               buffers: native.Buffers | None = None) -> Iterator[Groups]:
    """Each touched item row's uploads as one group, bucket by bucket (``RowLayout``); on float32 CPU values gathered
    by the native kernel into ``buffers`` if given (then valid until their next use)."""
    items, values = uploads.row_items, uploads.row_values
    layout = RowLayout.of(items, num_items)
    entry_malicious = malicious.index_select(0, uploads.row_owner())
    if native.supports(values):
        padded, flags, _ = native.group_rows(items, values, entry_malicious, *layout.native_slots(num_items),
                                             layout.num_slots, False, buffers)
    else:
        padded, flags = _scatter_rows(uploads, entry_malicious, num_items, layout)
    for slots, size, rows, counts in layout.buckets(items.device):
        yield Groups(padded[slots].view(-1, size, values.shape[1]), counts, flags[slots].view(-1, size), ITEM_EMBEDDING,
                     rows)


def row_columns(uploads: ClientUploads, num_items: int,
                buffers: native.Buffers | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per bucket (``RowLayout``): its item rows, their n_j and each row's values per coordinate ``[G, D, N]`` (+inf
    padding, upload order) -- ``padded_columns`` of ``row_groups``, which the native kernel writes directly."""
    items, values = uploads.row_items, uploads.row_values
    if not native.supports(values):
        no_flags = torch.zeros(uploads.num_clients, dtype=torch.bool, device=items.device)
        for groups in row_groups(uploads, no_flags, num_items):
            yield groups.rows, groups.counts, padded_columns(groups)
        return
    layout = RowLayout.of(items, num_items)
    _, _, columns = native.group_rows(items, values, None, *layout.native_slots(num_items), layout.num_slots, True,
                                      buffers)
    dim = values.shape[1]
    for slots, size, rows, counts in layout.buckets(items.device):
        yield rows, counts, columns[slots.start * dim:slots.stop * dim].view(-1, dim, size)


def _scatter_rows(uploads: ClientUploads, entry_malicious: torch.Tensor, num_items: int,
                  layout: RowLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """``native.group_rows`` in torch ops: the entries ordered by (bucket, item), client-id order within an item,
    then each copied to its row's first slot plus its rank among the row's entries."""
    items, values = uploads.row_items, uploads.row_values
    rows, bucket, counts, first_slot = (torch.from_numpy(a).to(items.device).long() for a in (
        layout.rows, layout.bucket, layout.counts, layout.first_slot))
    bucket_of = torch.zeros(num_items, dtype=torch.int64, device=items.device).index_copy_(0, rows, bucket)
    entry_order = stable_order(bucket_of.index_select(0, items) * num_items + items,
                               (int(bucket[-1]) + 1) * num_items if len(bucket) else 1)
    sorted_items = items.index_select(0, entry_order)
    first_entry = torch.zeros_like(bucket_of).index_copy_(0, rows, torch.cumsum(counts, 0) - counts)
    first = torch.zeros_like(bucket_of).index_copy_(0, rows, first_slot)
    rank = torch.arange(len(items), device=items.device) - first_entry.index_select(0, sorted_items)
    slot = first.index_select(0, sorted_items) + rank
    padded = values.new_zeros((layout.num_slots, values.shape[1])).index_copy_(0, slot,
                                                                               values.index_select(0, entry_order))
    flags = torch.zeros(layout.num_slots, dtype=torch.bool, device=items.device).index_copy_(
        0, slot, entry_malicious.index_select(0, entry_order))
    return padded, flags


class GroupedRule(AggregationRule):
    """A rule defined on groups of vectors (``combine``); this class forms the groups and writes the step."""

    mlp_grouping = "tensor"  # "tensor": one group per MLP tensor; "neuron": a weight matrix's rows are groups

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
        self._aggregate_mlp(uploads, malicious, step)
        return Aggregate(step, self.report)

    def _aggregate_mlp(self, uploads: ClientUploads, malicious: torch.Tensor, step: Theta) -> None:
        """Each MLP tensor over every client (or each neuron, ``mlp_grouping``)."""
        for name, value in uploads.dense.items():
            by_neuron = self.mlp_grouping == "neuron" and value.dim() == 3
            vectors = value.transpose(0, 1) if by_neuron else value.flatten(1)[None]
            count = torch.full((vectors.shape[0],), uploads.num_clients, device=vectors.device)
            rows = torch.arange(vectors.shape[0], device=vectors.device) if by_neuron else None
            groups = Groups(vectors, count, malicious[None].expand(vectors.shape[0], -1), name, rows)
            step[name] = self._run(groups).view_as(step[name])

    def _aggregate_rows(self, uploads: ClientUploads, malicious: torch.Tensor, targets: torch.Tensor,
                        out: torch.Tensor) -> None:
        """Each touched item row over its uploaders (``row_groups``)."""
        is_target = torch.zeros(self.spec.num_items, dtype=torch.bool, device=out.device)
        is_target[targets.to(out.device)] = True
        for groups in row_groups(uploads, malicious, self.spec.num_items, self.buffers):
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


class CoordinatewiseRule(GroupedRule):
    """A rule that takes each coordinate on its own, from its sorted values (median, trimmed mean): it uses every
    upload and needs no f (nothing dropped, no fallback). So the native kernel writes each item row's values straight
    into sorted columns (no per-upload groups), and all MLP tensors form one group (the same result as one group per
    tensor, in one call)."""

    @abstractmethod
    def combine_sorted(self, ordered: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``[G, D]``: n_g × the rule's statistic of each coordinate's sorted values ``ordered`` ``[G, D, N]``
        (n_g = ``counts``, padding +inf last); may overwrite ``ordered``."""

    def combine(self, groups: Groups, f: torch.Tensor) -> Combined:
        return Combined(self.combine_sorted(sorted_values(groups), groups.counts), groups.valid)

    def _aggregate_rows(self, uploads: ClientUploads, malicious: torch.Tensor, targets: torch.Tensor,
                        out: torch.Tensor) -> None:
        for rows, counts, columns in row_columns(uploads, self.spec.num_items, self.buffers):
            out[rows] = self.combine_sorted(sort_last_(columns), counts)

    def _aggregate_mlp(self, uploads: ClientUploads, malicious: torch.Tensor, step: Theta) -> None:
        vectors = torch.cat([value.flatten(1) for value in uploads.dense.values()], dim=1)[None]
        count = torch.tensor([uploads.num_clients], device=vectors.device)
        flat = self.combine_sorted(sorted_values(Groups(vectors, count, malicious[None])), count)[0]
        for name, part in zip(uploads.dense, flat.split([step[name].numel() for name in uploads.dense])):
            step[name] = part.view_as(step[name])


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

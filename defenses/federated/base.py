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


def sorted_values(groups: Groups) -> torch.Tensor:
    """Each coordinate's values sorted along the upload axis, padding (+inf) last."""
    filled = groups.values.masked_fill(~groups.valid[:, :, None], float("inf"))
    return filled.sort(dim=1).values


def coordinate_median(groups: Groups) -> torch.Tensor:
    """Coordinate-wise median per group; for even n_g the mean of the two middle values."""
    ordered = sorted_values(groups)
    n = groups.counts.clamp(min=1)
    low = ordered.gather(1, ((n - 1) // 2)[:, None, None].expand(-1, 1, ordered.shape[2]))
    high = ordered.gather(1, (n // 2)[:, None, None].expand(-1, 1, ordered.shape[2]))
    return ((low + high) / 2).squeeze(1)


def assumed_malicious(policy: str, groups: Groups) -> torch.Tensor:
    """f per group from the f policy (see the module docstring)."""
    kind, _, value = policy.partition(":")
    n = groups.counts
    if kind == "oracle":
        return groups.malicious.sum(1)
    if kind == "fraction":
        return torch.floor(n.double() * float(value) + 1e-9).long()
    return torch.minimum(torch.full_like(n, int(value)), ((n - 1) // 2).clamp(min=0))


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
        """Each touched item row over its uploaders, in buckets of similar n_j (at most 2x padding)."""
        items = uploads.row_items
        order = torch.argsort(items, stable=True)  # within an item: client-id order
        sorted_items = items[order]
        counts = torch.bincount(items, minlength=self.spec.num_items)
        rank = torch.arange(len(items), device=items.device) - (torch.cumsum(counts, 0) - counts)[sorted_items]
        entry_malicious = malicious[uploads.row_owner()][order]
        bucket = torch.where(counts > 0, torch.ceil(torch.log2(counts.clamp(min=1).double())).long(), -1)
        is_target = torch.zeros(self.spec.num_items, dtype=torch.bool, device=items.device)
        is_target[targets.to(items.device)] = True
        for b in torch.unique(bucket[bucket >= 0]).tolist():
            rows = torch.nonzero(bucket == b).squeeze(1)
            local = torch.full_like(counts, -1)
            local[rows] = torch.arange(len(rows), device=rows.device)
            entries = local[sorted_items] >= 0
            size = int(counts[rows].max())
            values = uploads.row_values.new_zeros((len(rows), size, uploads.row_values.shape[1]))
            flags = torch.zeros((len(rows), size), dtype=torch.bool, device=values.device)
            at = (local[sorted_items[entries]], rank[entries])
            values[at] = uploads.row_values[order[entries]]
            flags[at] = entry_malicious[entries]
            out[rows] = self._run(Groups(values, counts[rows], flags, ITEM_EMBEDDING, rows), is_target[rows])

    def _run(self, groups: Groups, target_groups: torch.Tensor | None = None) -> torch.Tensor:
        """``combine`` where the rule is defined, the coordinate median elsewhere; updates the report."""
        f = assumed_malicious(self.config.assumed_malicious, groups)
        fallback = groups.counts < self.min_count(f)
        sums = groups.values.new_zeros((groups.values.shape[0], groups.values.shape[2]))
        used = groups.valid.clone()
        if bool((~fallback).any()):
            combined = self.combine(groups.subset(~fallback), f[~fallback])
            sums[~fallback], used[~fallback] = combined.sums, combined.used
        if bool(fallback.any()):
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
    """n_g × the mean of the sorted values at ranks trim_g .. n_g − trim_g − 1 (padding sorted last)."""
    cumulative = torch.cat([torch.zeros_like(ordered[:, :1]), ordered.masked_fill(torch.isinf(ordered), 0).cumsum(1)], 1)
    index = lambda r: r[:, None, None].expand(-1, 1, ordered.shape[2])  # noqa: E731
    kept = (cumulative.gather(1, index(counts - trim)) - cumulative.gather(1, index(trim))).squeeze(1)
    return kept * (counts.to(kept.dtype) / (counts - 2 * trim).clamp(min=1).to(kept.dtype))[:, None]


def selected(groups: Groups, chosen: torch.Tensor) -> Combined:
    """n_g × the mean of the uploads ``chosen`` ([G, N] bool) selects."""
    weights = chosen.to(groups.values.dtype)
    total = (groups.values * weights[:, :, None]).sum(1)
    scale = groups.counts.to(total.dtype) / weights.sum(1).clamp(min=1)
    return Combined(total * scale[:, None], chosen)

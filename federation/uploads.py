"""Per-client uploads: what every selected client sends the server in one round (the wire format).

Each client's ∇Θ_u travels on its own. The MLP tensors are stacked per client (``dense[name]`` has shape
``[B, *shape]``); the item-embedding gradient travels as the rows the client touched, in CSR over the
clients (client ``b`` owns entries ``row_indptr[b]:row_indptr[b+1]`` of ``row_items`` / ``row_values``),
each client's item ids unique and ascending. Nothing else leaves a client: no user embedding, no interaction list
beyond the ids of the rows it updates (as in any federated recommender that uploads item gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from recsys import native
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec, Theta, add_rows

CLIENTS = "clients"
LOSSES = "losses"
ROW_INDPTR = f"{ITEM_EMBEDDING}.indptr"
ROW_ITEMS = f"{ITEM_EMBEDDING}.items"
ROW_VALUES = f"{ITEM_EMBEDDING}.values"


@dataclass
class ClientUploads:
    """The uploads of ``B`` clients: dense MLP gradients per client, touched item rows in CSR, and losses."""

    client_ids: np.ndarray  # int64 [B], global client ids
    dense: dict[str, torch.Tensor]  # every Θ tensor but the item embeddings: [B, *shape]
    row_indptr: torch.Tensor  # int64 [B + 1]
    row_items: torch.Tensor  # int64 [E]
    row_values: torch.Tensor  # [E, d]
    losses: torch.Tensor  # [B], each client's local loss

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    def row_owner(self) -> torch.Tensor:
        """The client position (0..B−1) of every item-row entry."""
        counts = self.row_indptr[1:] - self.row_indptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_clients, device=counts.device), counts)

    def scaled(self, factor: float) -> ClientUploads:
        """Every gradient multiplied by ``factor`` (losses unchanged)."""
        return ClientUploads(self.client_ids, {k: v * factor for k, v in self.dense.items()}, self.row_indptr,
                             self.row_items, self.row_values * factor, self.losses)

    def select(self, keep: np.ndarray) -> ClientUploads:
        """The uploads of the clients at positions ``keep`` (a boolean mask or an index array), in that order."""
        positions = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        index = torch.as_tensor(positions, device=self.row_indptr.device)
        starts, counts = self.row_indptr[:-1][index], (self.row_indptr[1:] - self.row_indptr[:-1])[index]
        indptr = torch.zeros(len(positions) + 1, dtype=torch.int64, device=counts.device)
        torch.cumsum(counts, 0, out=indptr[1:])
        entries = torch.repeat_interleave(starts - indptr[:-1], counts) + torch.arange(int(indptr[-1]),
                                                                                        device=counts.device)
        return ClientUploads(self.client_ids[positions], {k: v[index] for k, v in self.dense.items()}, indptr,
                             self.row_items[entries], self.row_values[entries], self.losses[index])

    def sorted_by_client(self) -> ClientUploads:
        """The same uploads ordered by client id, so the server's arithmetic never depends on the shard layout."""
        order = np.argsort(self.client_ids, kind="stable")
        return self if np.all(order == np.arange(len(order))) else self.select(order)

    @classmethod
    def concat(cls, parts: Sequence[ClientUploads]) -> ClientUploads:
        """One batch holding every part's clients, in order (at least one part)."""
        if len(parts) == 1:
            return parts[0]
        counts = torch.cat([p.row_indptr[1:] - p.row_indptr[:-1] for p in parts])
        indptr = torch.zeros(len(counts) + 1, dtype=torch.int64, device=counts.device)
        torch.cumsum(counts, 0, out=indptr[1:])
        return cls(np.concatenate([p.client_ids for p in parts]),
                   {k: torch.cat([p.dense[k] for p in parts]) for k in parts[0].dense}, indptr,
                   torch.cat([p.row_items for p in parts]), torch.cat([p.row_values for p in parts]),
                   torch.cat([p.losses for p in parts]))

    @classmethod
    def empty(cls, spec: NCFSpec, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> ClientUploads:
        shapes = {k: s for k, s in spec.shapes().items() if k != ITEM_EMBEDDING}
        return cls(np.zeros(0, np.int64), {k: torch.zeros((0, *s), dtype=dtype, device=device) for k, s in shapes.items()},
                   torch.zeros(1, dtype=torch.int64, device=device), torch.zeros(0, dtype=torch.int64, device=device),
                   torch.zeros((0, spec.dim), dtype=dtype, device=device), torch.zeros(0, dtype=dtype, device=device))

    def layout_problem(self, spec: NCFSpec, dtype: torch.dtype) -> str | None:
        """Why these uploads cannot travel as one batch for ``spec`` (keys, shapes, dtypes), or None."""
        shapes = {k: s for k, s in spec.shapes().items() if k != ITEM_EMBEDDING}
        count = self.num_clients
        if set(self.dense) != set(shapes):
            return f"dense keys {sorted(self.dense)}, expected {sorted(shapes)}"
        for name, shape in shapes.items():
            if tuple(self.dense[name].shape) != (count, *shape) or self.dense[name].dtype != dtype:
                return f"{name}: {tuple(self.dense[name].shape)} {self.dense[name].dtype}, expected {(count, *shape)} {dtype}"
        if tuple(self.row_indptr.shape) != (count + 1,) or self.row_values.shape != (len(self.row_items), spec.dim):
            return "item rows: row_indptr must have B + 1 entries and row_values one row of size d per row id"
        if self.row_values.dtype != dtype or tuple(self.losses.shape) != (count,):
            return f"item rows must be {dtype} and losses one per client"
        return None

    def squared_norms(self) -> torch.Tensor:
        """‖∇Θ_u‖² of every client's whole upload (a client's item rows summed in order)."""
        total = sum(torch.einsum("bi,bi->b", v, v) for v in (value.flatten(1) for value in self.dense.values()))
        if native.supports(self.row_values):
            return total + native.segment_square_sums(self.row_values, self.row_indptr)
        rows = torch.einsum("ij,ij->i", self.row_values, self.row_values)
        return total + torch.segment_reduce(rows, "sum", lengths=self.row_indptr.diff())

    def summed(self, num_items: int) -> Theta:
        """Σ_u ∇Θ_u as a dense Θ-shaped dict (eq. 6's sum), clients added in their order."""
        dim = self.row_values.shape[1]
        item = torch.zeros((num_items, dim), dtype=self.row_values.dtype, device=self.row_values.device)
        add_rows(item, self.row_items, self.row_values)
        return {ITEM_EMBEDDING: item, **{k: v.sum(0) for k, v in self.dense.items()}}

    def dense_rows(self, num_items: int) -> torch.Tensor:
        """Every client's item-embedding gradient as a dense ``[B, num_items, d]`` tensor (zeros where untouched)."""
        out = self.row_values.new_zeros((self.num_clients, num_items, self.row_values.shape[1]))
        out[self.row_owner(), self.row_items] = self.row_values
        return out

    def to(self, device: torch.device | str) -> ClientUploads:
        return ClientUploads(self.client_ids, {k: v.to(device) for k, v in self.dense.items()},
                             self.row_indptr.to(device), self.row_items.to(device), self.row_values.to(device),
                             self.losses.to(device))

    def to_record(self) -> ArrayRecord:
        """The uploads as Flower arrays (numpy, on the CPU)."""
        arrays = {CLIENTS: self.client_ids, LOSSES: self.losses, ROW_INDPTR: self.row_indptr,
                  ROW_ITEMS: self.row_items, ROW_VALUES: self.row_values, **self.dense}
        return ArrayRecord({name: Array(_numpy(value)) for name, value in arrays.items()})


def _numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)

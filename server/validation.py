"""Boundary checks for client uploads: a hostile or broken client can never crash the server or corrupt
Θ. A reply that breaks the wire format is rejected whole (``UploadRejected`` says how); within a
well-formed reply each client's upload is checked on its own and only the offending clients are dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord

from federation.protocol import array_numpy
from federation.uploads import CLIENTS, LOSSES, ROW_INDPTR, ROW_ITEMS, ROW_VALUES, ClientUploads
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec


class UploadRejected(ValueError):
    """The upload breaks the protocol; the message says how."""


@dataclass(frozen=True)
class Rejection:
    """One client's upload that the server dropped, and why."""

    client: int
    reason: str


def decode_array(record: ArrayRecord, name: str, dtype: np.dtype, shape: tuple[int | None, ...] | None) -> np.ndarray:
    """``record[name]`` as numpy, checked for dtype and shape (``None``: any size on that axis, or any shape)."""
    try:
        value = array_numpy(record[name])
    except Exception as error:  # noqa: BLE001 - any decoding failure is the client's fault
        raise UploadRejected(f"{name}: cannot decode array ({error})") from None
    if value.dtype != dtype:
        raise UploadRejected(f"{name}: dtype {value.dtype}, expected {dtype}")
    if shape is not None and (value.ndim != len(shape) or any(s is not None and v != s for v, s in zip(value.shape, shape))):
        raise UploadRejected(f"{name}: shape {value.shape}, expected {tuple('*' if s is None else s for s in shape)}")
    return value


def validate_uploads(record: ArrayRecord, spec: NCFSpec, selected: np.ndarray,
                     dtype: np.dtype = np.dtype(np.float32)) -> tuple[ClientUploads, list[Rejection]]:
    """Decode one node's uploads for the clients ``selected`` in this round; return the valid clients'
    uploads and a ``Rejection`` for every other client in the reply. Raises ``UploadRejected`` when the
    reply as a whole is malformed (keys, dtypes, shapes, CSR structure, more clients than selected)."""
    dense_shapes = {name: shape for name, shape in spec.shapes().items() if name != ITEM_EMBEDDING}
    expected = {CLIENTS, LOSSES, ROW_INDPTR, ROW_ITEMS, ROW_VALUES, *dense_shapes}
    if set(record.keys()) != expected:
        raise UploadRejected(f"keys {sorted(record.keys())}, expected {sorted(expected)}")
    clients = decode_array(record, CLIENTS, np.dtype(np.int64), (None,))
    count = len(clients)
    if count > len(selected):
        raise UploadRejected(f"{count} uploads for the {len(selected)} clients selected on this node")
    dense = {name: decode_array(record, name, dtype, (count, *shape)) for name, shape in dense_shapes.items()}
    losses = decode_array(record, LOSSES, dtype, (count,))
    indptr = decode_array(record, ROW_INDPTR, np.dtype(np.int64), (count + 1,))
    items = decode_array(record, ROW_ITEMS, np.dtype(np.int64), (None,))
    if indptr[0] != 0 or indptr[-1] != len(items) or np.any(np.diff(indptr) < 0):
        raise UploadRejected(f"{ROW_INDPTR}: must start at 0, never decrease and end at {len(items)} (the row count)")
    if len(items) > count * spec.num_items:
        raise UploadRejected(f"{ROW_ITEMS}: {len(items)} rows, more than {count} clients x {spec.num_items} items")
    values = decode_array(record, ROW_VALUES, dtype, (len(items), spec.dim))

    reasons: dict[int, str] = {}

    def reject(mask: np.ndarray, reason: str) -> None:
        for position in np.flatnonzero(mask):
            reasons.setdefault(int(position), reason)

    def reject_rows(bad_rows: np.ndarray, reason: str) -> None:  # the clients owning these item rows
        reject(np.bincount(np.searchsorted(indptr, bad_rows, side="right") - 1, minlength=count) > 0, reason)

    reject(~np.isin(clients, selected), "client id was not selected on this node in this round")
    _, first, counts = np.unique(clients, return_index=True, return_counts=True)
    reject(np.isin(clients, clients[first[counts > 1]]), "client id appears more than once")
    # Each check below first looks at the whole array in one pass (the common case: nothing wrong) and only then
    # finds the offending clients.
    for name, value in dense.items():
        if not _all_finite(value):
            reject(~np.isfinite(value.reshape(count, -1)).all(axis=1), f"{name}: contains NaN or Inf")
    reject(~np.isfinite(losses), "loss is not finite")
    if len(items) and (items.min() < 0 or items.max() >= spec.num_items):
        reject_rows(np.flatnonzero((items < 0) | (items >= spec.num_items)),
                    f"{ITEM_EMBEDDING} row ids outside [0, {spec.num_items})")
    if not _all_finite(values):
        reject_rows(np.flatnonzero(~np.isfinite(values).all(axis=1)), f"{ROW_VALUES}: contains NaN or Inf")
    descending = np.flatnonzero(items[1:] <= items[:-1]) + 1  # rows not above the previous row...
    descending = descending[~np.isin(descending, indptr)]  # ...that are not a client's first row
    reject_rows(descending, f"{ITEM_EMBEDDING} row ids of one client must be unique and ascending")

    uploads = ClientUploads(clients, {k: torch.from_numpy(v) for k, v in dense.items()}, torch.from_numpy(indptr),
                            torch.from_numpy(items), torch.from_numpy(values), torch.from_numpy(losses))
    rejected = [Rejection(int(clients[p]), reason) for p, reason in sorted(reasons.items())]
    if not reasons:
        return uploads, rejected
    keep = np.ones(count, dtype=bool)
    keep[list(reasons)] = False
    return uploads.select(keep), rejected


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or Inf in ``values``: one float64 sum (NaN and Inf propagate; float64 does not overflow on finite
    float32 values), without the boolean array of ``np.isfinite``."""
    return values.size == 0 or bool(np.isfinite(values.sum(dtype=np.float64)))


def validate_parameters(record: ArrayRecord, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decode a full parameter upload that must match ``expected``'s names, shapes and dtypes, all finite."""
    if set(record.keys()) != set(expected):
        raise UploadRejected(f"keys {sorted(record.keys())}, expected {sorted(expected)}")
    decoded = {}
    for name, like in expected.items():
        value = decode_array(record, name, like.new_empty(0).numpy().dtype, tuple(like.shape))
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise UploadRejected(f"{name}: contains NaN or Inf")
        decoded[name] = torch.from_numpy(value)
    return decoded

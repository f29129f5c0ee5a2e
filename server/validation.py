"""Boundary checks for client uploads: a hostile or broken client can never crash the server
or corrupt Θ; an invalid upload is rejected with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from federation.protocol import BENIGN_NORMS, MALICIOUS_NORMS, METRICS, ROWS, UPDATE, VALUES
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec, Theta


class UploadRejected(ValueError):
    """The upload breaks the protocol; the message says how."""


@dataclass
class Upload:
    """A validated upload: dense Σ_u ∇Θ_u of ``num_clients`` clients, their summed loss, and the
    upload norms the shard measured (diagnostics)."""

    grads: Theta
    num_clients: int
    loss_sum: float
    benign_norms: list[float] = field(default_factory=list)
    malicious_norms: list[float] = field(default_factory=list)


def decode_array(record, name: str, dtype: np.dtype, shape: tuple[int, ...] | None) -> np.ndarray:
    """``record[name]`` as numpy, checked for dtype, shape (``None``: any) and finite values."""
    try:
        value = record[name].numpy()
    except Exception as error:  # noqa: BLE001 - any decoding failure is the client's fault
        raise UploadRejected(f"{name}: cannot decode array ({error})") from None
    if value.dtype != dtype:
        raise UploadRejected(f"{name}: dtype {value.dtype}, expected {dtype}")
    if shape is not None and value.shape != shape:
        raise UploadRejected(f"{name}: shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise UploadRejected(f"{name}: contains NaN or Inf")
    return value


def validate_upload(content: RecordDict, spec: NCFSpec, max_clients: int, dtype: np.dtype = np.dtype(np.float32)) -> Upload:
    """Decode and check an upload against Θ's keys, shapes and dtype; raise ``UploadRejected``."""
    if UPDATE not in content.array_records or METRICS not in content.metric_records:
        raise UploadRejected(f"missing '{UPDATE}' or '{METRICS}' record")
    record, metrics = content.array_records[UPDATE], content.metric_records[METRICS]
    shapes = spec.shapes()
    sparse = ROWS in record or VALUES in record
    expected = set(shapes) - {ITEM_EMBEDDING} | ({ROWS, VALUES} if sparse else {ITEM_EMBEDDING})
    if set(record.keys()) != expected:
        raise UploadRejected(f"keys {sorted(record.keys())}, expected {sorted(expected)}")
    grads: Theta = {}
    for name, shape in shapes.items():
        if name == ITEM_EMBEDDING and sparse:
            rows = decode_array(record, ROWS, np.dtype(np.int64), None)
            if rows.ndim != 1 or len(rows) > spec.num_items:
                raise UploadRejected(f"{ROWS}: expected a 1-D array of at most {spec.num_items} row ids")
            if len(rows) and (rows.min() < 0 or rows.max() >= spec.num_items or len(np.unique(rows)) != len(rows)):
                raise UploadRejected(f"{ROWS}: row ids must be unique and in [0, {spec.num_items})")
            values = decode_array(record, VALUES, dtype, (len(rows), spec.dim))
            dense = torch.zeros(shape, dtype=torch.from_numpy(values).dtype)
            dense[torch.from_numpy(rows)] = torch.from_numpy(values)
            grads[name] = dense
        else:
            grads[name] = torch.from_numpy(decode_array(record, name, dtype, shape))
    try:
        num_clients, loss_sum = metrics["num-clients"], float(metrics["loss-sum"])
    except (KeyError, TypeError, ValueError):
        raise UploadRejected("metrics must hold 'num-clients' (int) and 'loss-sum' (float)") from None
    if not isinstance(num_clients, int) or not 0 <= num_clients <= max_clients:
        raise UploadRejected(f"num-clients {num_clients!r} outside [0, {max_clients}] (the clients it was sent)")
    if not np.isfinite(loss_sum):
        raise UploadRejected("loss-sum is not finite")
    norms = [_norm_list(metrics, key, num_clients) for key in (BENIGN_NORMS, MALICIOUS_NORMS)]
    return Upload(grads, num_clients, loss_sum, *norms)


def _norm_list(metrics, key: str, num_clients: int) -> list[float]:
    """An optional list of at most ``num_clients`` finite, non-negative upload norms."""
    if key not in metrics:
        return []
    try:
        values = np.asarray(metrics[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UploadRejected(f"{key} must be a list of floats") from None
    if len(values) > num_clients or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise UploadRejected(f"{key}: expected at most {num_clients} finite non-negative norms")
    return values.tolist()


def validate_parameters(record: ArrayRecord, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decode a full parameter upload that must match ``expected``'s names, shapes and dtypes."""
    if set(record.keys()) != set(expected):
        raise UploadRejected(f"keys {sorted(record.keys())}, expected {sorted(expected)}")
    return {
        name: torch.from_numpy(decode_array(record, name, like.new_empty(0).numpy().dtype, tuple(like.shape)))
        for name, like in expected.items()
    }

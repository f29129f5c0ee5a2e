"""Message contents exchanged by the ServerApp and the ClientApp (Flower records).

Server → client: Θ^t and the ids of the selected clients (what a real server knows).
Client → server: each selected client's own upload ∇Θ_u and loss (``federation.uploads``), or additive
metric sums. User embeddings and interactions never appear in any message.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federation.uploads import ClientUploads
from recsys.metrics import RankingSums
from recsys.models.ncf import Theta

SETUP = "query.setup"
TRAIN = "train"
EVALUATE = "evaluate"

THETA = "theta"
UPDATE = "update"
METRICS = "metrics"
SELECTION = "selection"
ROUND = "round"
SPEC = "setup"


def theta_record(theta: Theta) -> ArrayRecord:
    return ArrayRecord({name: Array(value.detach().cpu().numpy()) for name, value in theta.items()})


_DECODING = threading.Lock()


def array_numpy(array: Array) -> np.ndarray:
    """``array.numpy()``, one thread at a time: numpy parses the ``.npy`` header with ``ast.literal_eval``, and
    CPython 3.11 can raise ``SystemError: AST constructor recursion depth mismatch`` when two threads build ASTs
    at once (the in-process backend runs shards in threads; seen once in a two-shard evaluation)."""
    with _DECODING:
        return array.numpy()


def record_theta(record: ArrayRecord, device: torch.device | str = "cpu") -> Theta:
    return {name: torch.from_numpy(array_numpy(array)).to(device) for name, array in record.items()}


def train_instruction(theta: Theta, client_ids: np.ndarray, round_index: int) -> RecordDict:
    return RecordDict({
        THETA: theta_record(theta),
        SELECTION: ArrayRecord({"clients": Array(np.asarray(client_ids, dtype=np.int64))}),
        ROUND: ConfigRecord({"round": round_index}),
    })


def upload_reply(uploads: ClientUploads) -> RecordDict:
    """A node's reply to a training instruction: each selected client's own upload."""
    return RecordDict({UPDATE: uploads.to_record()})


def evaluate_reply(sums: RankingSums) -> RecordDict:
    return RecordDict({METRICS: MetricRecord({
        "test-users": sums.test_users,
        "hr": sums.hr,
        "precision": sums.precision,
        "ndcg": sums.ndcg,
        "target-hits": [int(x) for x in sums.target_hits.ravel()],
        "target-eligible": [int(x) for x in sums.target_eligible],
    })})


def reply_sums(content: RecordDict, num_er_ks: int, num_targets: int) -> RankingSums:
    """Decode an evaluation reply; raises ValueError when it is malformed."""
    m = content[METRICS]
    hits = np.asarray(m["target-hits"], dtype=np.int64).reshape(num_er_ks, num_targets)
    eligible = np.asarray(m["target-eligible"], dtype=np.int64).reshape(num_targets)
    values = [float(m["hr"]), float(m["precision"]), float(m["ndcg"])]
    if not np.all(np.isfinite(values)) or min(values) < 0 or hits.min(initial=0) < 0 or eligible.min(initial=0) < 0:
        raise ValueError("evaluation reply holds negative or non-finite sums")
    return RankingSums(int(m["test-users"]), *values, hits, eligible)

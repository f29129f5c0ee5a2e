"""Every upload is validated; a hostile client is rejected, counted, and never changes Θ."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from clients.strategy import ClientStrategy, ClientUpdate, HonestStrategy
from federation import protocol
from federation.config import SimulationConfig
from harness.runner import run
from recsys.models.ncf import NCFSpec, init_theta
from server.validation import UploadRejected, validate_upload

SPEC = NCFSpec(num_items=20)


def honest_upload(sparse_rows: int | None = None) -> RecordDict:
    grads = {k: torch.ones_like(v) for k, v in init_theta(SPEC, torch.Generator().manual_seed(0)).items()}
    if sparse_rows is not None:
        grads["item_emb"][sparse_rows:] = 0
    return protocol.update_reply(grads, num_clients=3, loss_sum=1.5)


def tamper(content: RecordDict, name: str, value) -> RecordDict:
    arrays = dict(content.array_records[protocol.UPDATE].items())
    if value is None:
        del arrays[name]
    else:
        arrays[name] = Array(value)
    return RecordDict({protocol.UPDATE: ArrayRecord(arrays), protocol.METRICS: content.metric_records[protocol.METRICS]})


def test_valid_dense_and_sparse_uploads_decode_to_the_same_gradient():
    dense = validate_upload(honest_upload(), SPEC, max_clients=3)
    assert dense.num_clients == 3 and dense.loss_sum == 1.5
    sparse_content = honest_upload(sparse_rows=2)
    assert protocol.ROWS in sparse_content.array_records[protocol.UPDATE]  # 2 of 20 rows: sparse is smaller
    sparse = validate_upload(sparse_content, SPEC, max_clients=3)
    assert sparse.grads["item_emb"][:2].eq(1).all() and sparse.grads["item_emb"][2:].eq(0).all()


@pytest.mark.parametrize("name,value,reason", [
    ("mlp.0.weight", np.full((8, 16), np.nan, np.float32), "NaN"),
    ("mlp.0.weight", np.full((8, 16), np.inf, np.float32), "NaN or Inf"),
    ("mlp.0.weight", np.zeros((8, 15), np.float32), "shape"),
    ("mlp.0.weight", np.zeros((8, 16), np.float64), "dtype"),
    ("mlp.1.bias", None, "keys"),
    ("unexpected", np.zeros(3, np.float32), "keys"),
])
def test_malformed_uploads_are_rejected(name, value, reason):
    with pytest.raises(UploadRejected, match=reason):
        validate_upload(tamper(honest_upload(), name, value), SPEC, max_clients=3)


@pytest.mark.parametrize("rows", [np.array([0, 25]), np.array([-1, 0]), np.array([1, 1])])
def test_sparse_rows_out_of_range_or_repeated_are_rejected(rows):
    content = tamper(honest_upload(sparse_rows=2), protocol.ROWS, rows.astype(np.int64))
    with pytest.raises(UploadRejected, match="row ids"):
        validate_upload(content, SPEC, max_clients=3)


def test_claiming_more_clients_than_were_sent_is_rejected():
    content = honest_upload()
    content.metric_records[protocol.METRICS] = MetricRecord({"num-clients": 4, "loss-sum": 0.0})
    with pytest.raises(UploadRejected, match="num-clients"):
        validate_upload(content, SPEC, max_clients=3)


class NaNStrategy(ClientStrategy):
    """Uploads NaN gradients."""

    def train(self, theta, batch, ctx):
        update = HonestStrategy().train(theta, batch, ctx)
        return ClientUpdate({k: torch.full_like(v, float("nan")) for k, v in update.grads.items()},
                            update.embeddings, update.loss_sum, update.num_clients)


class CrashingStrategy(ClientStrategy):
    def train(self, theta, batch, ctx):
        raise RuntimeError("boom")


@pytest.mark.parametrize("hostile", ["NaNStrategy", "CrashingStrategy"])
def test_hostile_shard_is_rejected_and_theta_stays_finite(tmp_path, hostile):
    config = SimulationConfig(dataset="synthetic", synthetic_users=200, synthetic_items=100, epochs=1,
                              clients_per_round=50, num_shards=2, out=str(tmp_path), checkpoint_every=1,
                              client_strategies=(f"tests.test_validation:{hostile}@0-99",))
    history = run(config, echo=False)
    assert history[-1]["rejected_uploads"] == 4  # shard 0 (clients 0-99) took part in all 4 rounds
    theta = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["theta"]
    assert all(torch.isfinite(v).all() for v in theta.values())
    assert np.isfinite(history[-1]["test/hr@20"])

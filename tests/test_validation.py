"""Every client's upload is validated on its own: a hostile client is rejected alone, counted, and never changes Θ."""

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from clients.strategy import ClientStrategy, ClientUpdate, HonestStrategy
from federation.config import SimulationConfig
from federation.uploads import CLIENTS, LOSSES, ROW_INDPTR, ROW_ITEMS, ROW_VALUES, ClientUploads
from harness.runner import run
from recsys.models.ncf import NCFSpec
from server.validation import UploadRejected, validate_uploads

SPEC = NCFSpec(num_items=20)
SELECTED = np.array([4, 7, 9])


def honest_uploads() -> ClientUploads:
    """Clients 4, 7, 9 touching rows {0, 3}, {1}, {} with all-ones gradients."""
    dense = {name: torch.ones((3, *shape)) for name, shape in SPEC.shapes().items() if name != "item_emb"}
    return ClientUploads(SELECTED.copy(), dense, torch.tensor([0, 2, 3, 3]), torch.tensor([0, 3, 1]), torch.ones((3, 8)),
                         torch.tensor([0.5, 0.25, 0.125]))


def tamper(record: ArrayRecord, name: str, value) -> ArrayRecord:
    arrays = dict(record.items())
    if value is None:
        del arrays[name]
    else:
        arrays[name] = Array(value)
    return ArrayRecord(arrays)


def test_a_valid_reply_decodes_to_the_same_uploads():
    uploads, rejected = validate_uploads(honest_uploads().to_record(), SPEC, SELECTED)
    assert rejected == [] and uploads.client_ids.tolist() == [4, 7, 9]
    expected = honest_uploads()
    for name, value in expected.dense.items():
        torch.testing.assert_close(uploads.dense[name], value)
    assert uploads.row_items.tolist() == [0, 3, 1] and uploads.row_indptr.tolist() == [0, 2, 3, 3]
    torch.testing.assert_close(uploads.losses, expected.losses)


def _with(name: str, change) -> ArrayRecord:
    record = honest_uploads().to_record()
    value = record[name].numpy().copy()
    change(value)
    return tamper(record, name, value)


def _nan_in(index):
    def change(value):
        value[index] = np.nan
    return change


@pytest.mark.parametrize("record,client,reason", [
    (lambda: _with("mlp.0.weight", _nan_in((1, 0, 0))), 7, "mlp.0.weight: contains NaN or Inf"),
    (lambda: _with("mlp.2.bias", lambda v: v.__setitem__(0, np.inf)), 4, "mlp.2.bias: contains NaN or Inf"),
    (lambda: _with(LOSSES, _nan_in(2)), 9, "loss is not finite"),
    (lambda: _with(ROW_VALUES, _nan_in((2, 3))), 7, "contains NaN or Inf"),
    (lambda: _with(ROW_ITEMS, lambda v: v.__setitem__(2, 20)), 7, "row ids outside"),
    (lambda: _with(ROW_ITEMS, lambda v: v.__setitem__(0, -1)), 4, "row ids outside"),
    (lambda: _with(ROW_ITEMS, lambda v: v.__setitem__(1, 0)), 4, "unique and ascending"),
    (lambda: _with(ROW_ITEMS, lambda v: v.__setitem__(slice(0, 2), [3, 0])), 4, "unique and ascending"),
    (lambda: _with(CLIENTS, lambda v: v.__setitem__(2, 5)), 5, "was not selected"),
])
def test_one_bad_client_is_rejected_alone(record, client, reason):
    uploads, rejected = validate_uploads(record(), SPEC, SELECTED)
    assert [r.client for r in rejected] == [client] and reason in rejected[0].reason
    assert uploads.num_clients == 2 and client not in uploads.client_ids.tolist()


def test_a_client_id_sent_twice_rejects_both_copies():
    record = _with(CLIENTS, lambda v: v.__setitem__(1, 4))
    uploads, rejected = validate_uploads(record, SPEC, SELECTED)
    assert [r.client for r in rejected] == [4, 4] and uploads.client_ids.tolist() == [9]


@pytest.mark.parametrize("name,value,reason", [
    ("mlp.0.weight", np.zeros((3, 8, 15), np.float32), "shape"),
    ("mlp.0.weight", np.zeros((3, 8, 16), np.float64), "dtype"),
    (LOSSES, np.zeros(2, np.float32), "shape"),
    (ROW_VALUES, np.zeros((3, 7), np.float32), "shape"),
    (ROW_INDPTR, np.array([0, 2, 1, 3]), "never decrease"),
    (ROW_INDPTR, np.array([0, 2, 3, 4]), "end at 3"),
    (CLIENTS, np.array([4, 7, 9, 11]), "uploads for the 3 clients"),
    ("mlp.1.bias", None, "keys"),
    ("unexpected", np.zeros(3, np.float32), "keys"),
])
def test_a_reply_that_breaks_the_wire_format_is_rejected_whole(name, value, reason):
    with pytest.raises(UploadRejected, match=reason):
        validate_uploads(tamper(honest_uploads().to_record(), name, value), SPEC, SELECTED)


class NaNForSomeClients(ClientStrategy):
    """Honest, except that clients with an even id upload NaN."""

    def train(self, theta, batch, ctx):
        update = HonestStrategy().train(theta, batch, ctx)
        uploads = update.uploads
        bad = torch.from_numpy(uploads.client_ids % 2 == 0)
        for value in uploads.dense.values():
            value[bad] = float("nan")
        return ClientUpdate(uploads, update.embeddings)


class CrashingStrategy(ClientStrategy):
    def train(self, theta, batch, ctx):
        raise RuntimeError("boom")


class WrongShapeStrategy(ClientStrategy):
    """Honest, but uploads an MLP bias of the wrong width."""

    def train(self, theta, batch, ctx):
        update = HonestStrategy().train(theta, batch, ctx)
        update.uploads.dense["mlp.0.bias"] = update.uploads.dense["mlp.0.bias"][:, :3]
        return update


@pytest.mark.parametrize("hostile,expected,reason", [("NaNForSomeClients", 25, "NaN"),
                                                     ("CrashingStrategy", 50, "no upload"),
                                                     ("WrongShapeStrategy", 50, "no upload")])
def test_hostile_clients_are_rejected_alone_and_theta_stays_finite(tmp_path, hostile, expected, reason):
    """Clients 0-49 are hostile, 50-99 honest, all hosted by shard 0: NaN uploads are rejected client by client;
    a crashing or malformed strategy loses only its own clients' uploads. The honest clients of the same shard
    and the other shard count."""
    config = SimulationConfig(dataset="synthetic", synthetic_users=200, synthetic_items=100, epochs=1,
                              clients_per_round=50, num_shards=2, out=str(tmp_path), checkpoint_every=1,
                              client_strategies=(f"tests.test_validation:{hostile}@0-49",))
    history = run(config, echo=False)
    assert history[-1]["rejected_uploads"] == expected
    theta = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["theta"]
    assert all(torch.isfinite(v).all() for v in theta.values())
    assert np.isfinite(history[-1]["test/hr@20"])
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert sum(r["uploads/benign_clients"] for r in rounds) == 200 - expected
    reasons = [json.loads(line) for line in (tmp_path / "rejections.jsonl").read_text().splitlines()]
    assert len(reasons) == expected and all(r["client"] < 50 for r in reasons)
    assert reason in reasons[0]["reason"]

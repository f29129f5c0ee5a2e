"""Nothing user-private (user embeddings, interactions) ever reaches the server: every message is inspected."""

import numpy as np

from clients.app import app as client_app
from federation import checkpoints, uploads
from federation.config import SimulationConfig
from harness.inprocess import InProcessGrid, run_inprocess
from harness.reporting import RunWriter
from server.app import make_server_app

MLP = {f"mlp.{k}.{p}" for k in range(3) for p in ("weight", "bias")}
THETA_AND_SELECTION = {"item_emb", "clients"} | MLP
# A client's upload: its id, loss, MLP gradient and the item rows it touched (the ids of those rows are what
# every federated recommender that uploads sparse item gradients reveals; positives and sampled negatives mix).
UPLOAD = {uploads.CLIENTS, uploads.LOSSES, uploads.ROW_INDPTR, uploads.ROW_ITEMS, uploads.ROW_VALUES} | MLP
ALLOWED_METRICS = {"num-clients", "test-users", "hr", "precision", "ndcg", "target-hits", "target-eligible"}


class RecordingGrid(InProcessGrid):
    """Keeps every message in both directions."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.to_clients, self.to_server = [], []

    def push_messages(self, messages):
        messages = list(messages)
        self.to_clients.extend(messages)
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        replies = list(super().pull_messages(message_ids))
        self.to_server.extend(replies)
        return replies


def test_no_message_carries_user_embeddings_or_interactions(tmp_path):
    config = SimulationConfig(dataset="synthetic", synthetic_users=120, synthetic_items=60, epochs=2,
                              clients_per_round=32, num_shards=2, out=str(tmp_path), attack="ra", malicious_frac=0.05)
    grid = run_inprocess(make_server_app(config, RunWriter(config, echo=False)), client_app, 2, RecordingGrid)
    assert len(grid.to_server) == len(grid.to_clients) > 10
    embeddings = checkpoints.committed_embeddings(tmp_path).numpy()  # the clients' final p_u
    private_bits = set(embeddings.astype(np.float32).view(np.int32).ravel().tolist())  # exact float32 values
    for message in grid.to_server:
        assert not message.has_error()
        content = message.content
        assert set(content.config_records.keys()) == set()
        for record in content.array_records.values():
            for name, array in record.items():
                assert name in UPLOAD, name
                if array.numpy().dtype != np.float32:
                    continue
                bits = array.numpy().view(np.int32).ravel()
                assert not private_bits.intersection(bits[bits != 0].tolist()), name
        for record in content.metric_records.values():
            assert set(record.keys()) <= ALLOWED_METRICS
    for message in grid.to_clients:  # the server only ever sends Θ, client ids and settings
        for record in message.content.array_records.values():
            assert set(record.keys()) <= THETA_AND_SELECTION

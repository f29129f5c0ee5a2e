"""The Ray backend (Flower's simulation engine, nodes pinned to actors, on one or two Ray nodes) and a transport
that moves nodes between workers give exactly the in-process numbers."""

import os
import pickle

import numpy as np
import pytest

from clients import app
from federation.config import SimulationConfig
from harness import ray_engine
from harness.inprocess import InProcessGrid, run_inprocess
from harness.reporting import RunWriter
from harness.runner import run
from server.app import make_server_app

SETTINGS = dict(dataset="synthetic", synthetic_users=300, synthetic_items=120, synthetic_items_per_user=20, epochs=2,
                clients_per_round=64, lr=0.05, num_shards=2, seed=7, attack="a-hum", malicious_frac=0.02)
TIMINGS = {"seconds", "eval_seconds"}


def assert_same_metrics(reference: list[dict], other: list[dict]) -> None:
    assert len(other) == len(reference) == SETTINGS["epochs"] + 1
    for a, b in zip(reference, other):
        assert {k: v for k, v in b.items() if k not in TIMINGS} == {k: v for k, v in a.items() if k not in TIMINGS}


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory) -> list[dict]:
    return run(SimulationConfig(**SETTINGS, out=str(tmp_path_factory.mktemp("inprocess"))), echo=False)


@pytest.fixture
def replies(tmp_path, monkeypatch) -> list:
    """The run's ``SharedMemoryReplies``, with its files in a folder of ``tmp_path`` (checked empty afterwards)."""
    folder, made = tmp_path / "shared-memory", []
    folder.mkdir()
    monkeypatch.setattr(ray_engine, "SHARED_MEMORY", str(folder))
    init = ray_engine.SharedMemoryReplies.__init__
    monkeypatch.setattr(ray_engine.SharedMemoryReplies, "__init__", lambda self, *a: made.append(self) or init(self, *a))
    yield made
    assert os.listdir(folder) == []


def test_ray_engine_matches_inprocess(tmp_path, inprocess, replies):
    """Both actors run on the driver's machine and hand their replies over in files."""
    history = run(SimulationConfig(**SETTINGS, out=str(tmp_path / "run"), backend="ray"), echo=False)
    assert_same_metrics(inprocess, history)
    assert inprocess[-1]["uploads/malicious_norm_mean"] > 0  # the attack ran
    assert len(replies) == 1 and len(replies[0].paths) == 2 and None not in replies[0].paths


def test_replies_through_ray_match_inprocess(tmp_path, inprocess, monkeypatch):
    """Without a shared-memory folder (or for an actor on another machine) replies travel through Ray."""
    monkeypatch.setattr(ray_engine, "SHARED_MEMORY", None)
    assert_same_metrics(inprocess, run(SimulationConfig(**SETTINGS, out=str(tmp_path), backend="ray"), echo=False))


class RoamingGrid(InProcessGrid):
    """Flower's stock Ray engine in miniature: nodes are not pinned, each message runs on one of two workers
    (two shard caches) picked at random, and a node's context travels pickled."""

    def __init__(self, client_app, num_nodes, run_id):
        super().__init__(client_app, num_nodes, run_id, workers=1)
        for context in self.contexts.values():
            del context.node_config[app.PINNED]
        self.caches, self.rng = ({}, {}), np.random.default_rng(0)

    def _deliver(self, message):
        node = message.metadata.dst_node_id
        self.contexts[node] = pickle.loads(pickle.dumps(self.contexts[node]))
        app._SHARDS = self.caches[self.rng.integers(2)]
        return super()._deliver(message)


def test_nodes_moving_between_workers_keep_their_state(tmp_path, inprocess, monkeypatch):
    """A worker that meets a node first or late rebuilds its shard from the dataset and the node state's p_u."""
    builds = []
    build = app._build_shard
    monkeypatch.setattr(app, "_build_shard", lambda *args: builds.append(args[1]) or build(*args))
    monkeypatch.setattr(app, "_SHARDS", {})
    config = SimulationConfig(**SETTINGS, out=str(tmp_path))
    writer = RunWriter(config, echo=False)
    run_inprocess(make_server_app(config, writer), app.app, 2, RoamingGrid)
    assert_same_metrics(inprocess, writer.history)
    assert len(builds) == 4 and len(set(builds)) == 2  # each node's shard built once on each worker


@pytest.mark.slow
def test_two_local_ray_nodes_match_inprocess(tmp_path, inprocess, replies, monkeypatch):
    """Two Ray nodes of one CPU each: the two actors (one CPU each) run on different nodes, and only the one on
    the driver's node replies through a file."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert len(cluster.list_all_nodes()) == 2
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        history = run(SimulationConfig(**SETTINGS, out=str(tmp_path / "run"), backend="ray"), echo=False)
    finally:
        cluster.shutdown()
    assert_same_metrics(inprocess, history)
    assert sorted(path is None for path in replies[0].paths) == [False, True]


def test_a_pinned_node_reaching_a_worker_without_its_state_fails_clearly(tmp_path, monkeypatch):
    """No silent restart from the initial p_u: a pinned node's state exists only in the worker it was pinned to."""
    from flwr.app import ConfigRecord, Context, RecordDict

    monkeypatch.setattr(app, "_SHARDS", {})
    state = RecordDict({"shard": ConfigRecord({"shard": 0}), "state": ConfigRecord({"version": 3})})
    context = Context(run_id=1, node_id=100, node_config={app.PINNED: True}, state=state, run_config={})
    with pytest.raises(RuntimeError, match="held by another worker"):
        app._shard(context)


def test_a_reply_file_holds_the_pickled_reply_or_the_reply_comes_back_itself(tmp_path):
    """The actor's side of the shared-memory replies, called in this process: a full device (``/dev/full``,
    like a full ``/dev/shm``) sends the reply back through Ray instead of failing the round."""
    app_fn = lambda: (lambda message, context: f"reply to {message}")  # noqa: E731
    writer = ray_engine.ReplyFileWriter()
    size = writer.run_into_file(app_fn, "m1", "0", {"round": 1}, str(tmp_path / "reply"))
    assert pickle.loads((tmp_path / "reply").read_bytes()[:size]) == ("reply to m1", {"round": 1})
    shorter = writer.run_into_file(app_fn, "m", "0", {"round": 2}, str(tmp_path / "reply"))
    assert shorter < size and pickle.loads((tmp_path / "reply").read_bytes()[:shorter]) == ("reply to m", {"round": 2})
    if os.path.exists("/dev/full"):
        assert ray_engine.ReplyFileWriter().run_into_file(app_fn, "m", "0", {}, "/dev/full") == ("reply to m", {})

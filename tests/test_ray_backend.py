"""The Ray backend (Flower's simulation engine, nodes pinned to actors, on one or two Ray nodes) and a transport
that moves nodes between workers give exactly the in-process numbers."""

import gc
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
def channels(tmp_path, monkeypatch) -> list:
    """The run's ``LocalChannels``, with the handshake sockets in a folder of ``tmp_path`` (checked empty
    afterwards)."""
    folder, made = tmp_path / "sockets", []
    folder.mkdir()
    monkeypatch.setattr(ray_engine, "SOCKET_FOLDER", str(folder))
    init = ray_engine.LocalChannels.__init__
    monkeypatch.setattr(ray_engine.LocalChannels, "__init__", lambda self, *a: made.append(self) or init(self, *a))
    yield made
    assert os.listdir(folder) == []


def test_ray_engine_matches_inprocess(tmp_path, inprocess, channels):
    """Both actors run on the driver's machine and get their messages over Unix sockets."""
    history = run(SimulationConfig(**SETTINGS, out=str(tmp_path / "run"), backend="ray"), echo=False)
    assert_same_metrics(inprocess, history)
    assert inprocess[-1]["uploads/malicious_norm_mean"] > 0  # the attack ran
    assert len(channels) == 1 and len(channels[0].conns) == 2 and None not in channels[0].conns
    assert all(conn.fileno() == -1 for conn in channels[0].conns)  # closed when the run ended


def test_ray_calls_match_inprocess(tmp_path, inprocess, monkeypatch):
    """Without the sockets (as for an actor on another machine) every message travels through Ray calls."""
    monkeypatch.setattr(ray_engine, "LOCAL_SOCKETS", False)
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
def test_two_local_ray_nodes_match_inprocess(tmp_path, inprocess, channels, monkeypatch):
    """Two Ray nodes of one CPU each: the two actors (one CPU each) run on different nodes, and only the one on
    the driver's node is served over a socket."""
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
    assert sorted(conn is None for conn in channels[0].conns) == [False, True]


def test_a_pinned_node_reaching_a_worker_without_its_state_fails_clearly(tmp_path, monkeypatch):
    """No silent restart from the initial p_u: a pinned node's state exists only in the worker it was pinned to."""
    from flwr.app import ConfigRecord, Context, RecordDict

    monkeypatch.setattr(app, "_SHARDS", {})
    state = RecordDict({"shard": ConfigRecord({"shard": 0}), "state": ConfigRecord({"version": 3})})
    context = Context(run_id=1, node_id=100, node_config={app.PINNED: True}, state=state, run_config={})
    with pytest.raises(RuntimeError, match="held by another worker"):
        app._shard(context)


def test_a_socket_served_actor_replies_reports_client_errors_and_dies_loudly(tmp_path):
    """The socket transport on real actors: a reply comes back with its context, a ClientApp's exception comes
    back as Flower's ``ClientAppException`` with its message, and an actor process that dies mid-call raises
    Ray's actor error instead of hanging the round."""
    import ray
    from flwr.clientapp.client_app import ClientAppException

    def app_fn():
        def client_app(message, context):
            if message == "fail":
                raise ValueError("no shard for node 3")
            if message == "die":
                os._exit(3)
            return f"reply to {message}"
        return client_app

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        actors = [ray_engine.SocketClientActorRemote.options(num_cpus=1).remote() for _ in range(2)]
        channels = ray_engine.LocalChannels(actors, app_fn, str(tmp_path))
        assert os.listdir(tmp_path) == [] and None not in channels.conns
        assert channels.call(0, "m1", {"round": 1}) == ("reply to m1", {"round": 1})
        assert channels.call(1, "m2", {"round": 2}) == ("reply to m2", {"round": 2})
        with pytest.raises(ClientAppException, match="no shard for node 3"):
            channels.call(0, "fail", {})
        assert channels.call(0, "m3", {}) == ("reply to m3", {})  # the actor keeps serving
        for message in ("die", "m"):  # dying mid-call, then a call to the dead actor
            with pytest.raises(ray.exceptions.RayActorError):
                channels.call(1, message, {})
        assert channels.call(0, "m4", {}) == ("reply to m4", {})
        channels.close()
        long_folder = tmp_path / ("x" * 120)  # too long for a socket address: Ray calls instead
        long_folder.mkdir()
        by_ray = ray_engine.LocalChannels(actors[:1], app_fn, str(long_folder))
        assert by_ray.conns == [None] and by_ray.call(0, "m5", {}) == ("reply to m5", {})
        del channels, actors, by_ray
    finally:
        gc.collect()  # Ray's handles go while Ray is up
        ray.shutdown()

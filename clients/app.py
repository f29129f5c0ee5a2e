"""The Flower ``ClientApp``: each supernode hosts one shard of simulated clients.

Data locality: the worker process that serves a node (the driver in-process, a Ray actor) builds the
shard's data once from the dataset itself — the run's settings and the shard's client range are in the
node's ``context.state`` — and caches it per (run, shard); a new run evicts the previous run's shards,
and the harness releases a run's shards when it ends. The only thing a shard changes during a run is
its clients' user embeddings p_u (random draws are keyed by seed, round and client, never by position).
Where the transport pins a node to one worker (``PINNED`` in the node config: the in-process grid and
the harness's Ray engine) p_u stays in that worker and the context carries a version number only;
elsewhere (e.g. ``flwr run`` on Flower's stock Ray engine, which hands a node's messages to any actor)
p_u also travels in ``context.state``, so a worker that meets a node for the first time, or late,
rebuilds the shard's data from the dataset and takes p_u from the context.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.population import build_client_data
from clients.shard import Shard
from federation import checkpoints, protocol
from federation.assignments import assign_strategies, strategy_specs
from federation.config import SimulationConfig
from federation.plan import dataset_for, make_plan

app = ClientApp()

PINNED = "worker-pinned"  # node-config key: every message of this node reaches the same worker process
_META = "shard"
_STATE = "state"
_EMBEDDINGS = "embeddings"


@dataclass
class _Cached:
    version: int  # number of training rounds the shard's embeddings have seen
    shard: Shard
    config: SimulationConfig


_SHARDS: dict[tuple[int, int], _Cached] = {}  # (run id, shard index) -> this worker's copy of the shard
_LOCK = threading.Lock()


def cached_shards() -> int:
    """Shards held by this process (for leak checks)."""
    return len(_SHARDS)


def release_run(run_id: int) -> None:
    """Drop this process's shards of run ``run_id`` (called when the run ends)."""
    with _LOCK:
        for key in [key for key in _SHARDS if key[0] == run_id]:
            del _SHARDS[key]


def _build_shard(config: SimulationConfig, first: int, count: int, embeddings: np.ndarray | None) -> Shard:
    """The shard of clients ``first .. first + count - 1`` from the dataset (initial or given embeddings)."""
    dataset = dataset_for(config)
    plan = make_plan(config, dataset)
    users = np.arange(first, first + count, dtype=np.int64)
    data = build_client_data(config, plan, dataset, users)
    if embeddings is not None:
        data = type(data)(data.users, data.train, data.test, data.negatives, embeddings)
    strategy_index = assign_strategies(plan.assignments, plan.num_clients)[users]
    return Shard(data, config, plan.num_items, strategy_specs(plan.assignments), strategy_index,
                 torch.device(config.resolved_device()))


def _store(context: Context, cached: _Cached) -> None:
    """Cache ``cached`` for the node's run and shard, evicting every shard of other runs (a new run started)."""
    key = (context.run_id, int(context.state.config_records[_META]["shard"]))
    with _LOCK:
        for other in [k for k in _SHARDS if k[0] != context.run_id]:
            del _SHARDS[other]
        _SHARDS[key] = cached


def _save_state(context: Context, cached: _Cached) -> None:
    """Record the shard's version in the node state, and its embeddings unless the node is pinned to this worker."""
    state = context.state.config_records[_STATE]
    state["version"] = cached.version
    if not context.node_config.get(PINNED, False):
        context.state.array_records[_EMBEDDINGS] = ArrayRecord({"p": Array(cached.shard.embeddings.cpu().numpy())})


def _shard(context: Context) -> _Cached:
    """The node's shard: this worker's copy when it is current, else rebuilt or refreshed from the node state."""
    meta, version = context.state.config_records[_META], int(context.state.config_records[_STATE]["version"])
    cached = _SHARDS.get((context.run_id, int(meta["shard"])))
    if cached is not None and cached.version == version:
        return cached
    if _EMBEDDINGS not in context.state.array_records:
        raise RuntimeError(f"shard {meta['shard']} at round version {version} is held by another worker and its "
                           "node state carries no embeddings: the transport broke its promise to pin the node "
                           f"('{PINNED}')")
    embeddings = protocol.array_numpy(context.state.array_records[_EMBEDDINGS]["p"])
    if cached is None:
        config = SimulationConfig.from_json(str(meta["config"]))
        cached = _Cached(version, _build_shard(config, int(meta["first-client"]), int(meta["num-clients"]),
                                               embeddings), config)
        _store(context, cached)
    else:
        cached.shard.embeddings = torch.from_numpy(embeddings).to(cached.shard.device)
        cached.version = version
    return cached


@app.query("setup")
def setup(message: Message, context: Context) -> Message:
    """Build this node's shard: its clients' local data, negatives and initial (or checkpointed) embeddings."""
    spec = message.content.config_records[protocol.SPEC]
    config = SimulationConfig.from_json(str(spec["config"]))
    first, count = int(spec["first-client"]), int(spec["num-clients"])
    epoch = int(spec["checkpoint-epoch"])
    saved = None
    if epoch >= 0:  # resume: this shard's clients from the committed checkpoint, whatever its shard count
        saved = checkpoints.load_embeddings(config.out, epoch, list(spec["checkpoint-starts"]), first, count)
    context.state.config_records[_META] = ConfigRecord({
        "config": config.to_json(), "shard": int(spec["shard"]), "first-client": first, "num-clients": count,
        "targets": list(spec["targets"]),
    })
    context.state.config_records[_STATE] = ConfigRecord({"version": 0})
    cached = _Cached(0, _build_shard(config, first, count, saved), config)
    _store(context, cached)
    _save_state(context, cached)
    return Message(RecordDict({protocol.METRICS: MetricRecord({"num-clients": count})}), reply_to=message)


def _targets(context: Context) -> torch.Tensor:
    return torch.tensor(list(context.state.config_records[_META]["targets"]), dtype=torch.int64)


@app.train()
def train(message: Message, context: Context) -> Message:
    """One round for the selected clients of this shard; each uploads its own ∇Θ_u."""
    cached = _shard(context)
    shard = cached.shard
    theta = protocol.record_theta(message.content.array_records[protocol.THETA], shard.device)
    clients = protocol.array_numpy(message.content.array_records[protocol.SELECTION]["clients"])
    round_index = int(message.content.config_records[protocol.ROUND]["round"])
    uploads = shard.train_round(theta, clients, round_index, _targets(context))
    cached.version += 1
    _save_state(context, cached)
    return Message(protocol.upload_reply(uploads), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Metric sums over this shard's benign clients; optionally write the shard's part of the epoch's checkpoint
    (committed by the server afterwards)."""
    cached = _shard(context)
    shard, config = cached.shard, cached.config
    theta = protocol.record_theta(message.content.array_records[protocol.THETA], shard.device)
    sums = shard.evaluate(theta, _targets(context), config.top_k, config.er_ks)
    instruction = message.content.config_records[protocol.ROUND]
    if bool(instruction["checkpoint"]):
        checkpoints.save_shard(config.out, int(instruction["epoch"]), int(context.state.config_records[_META]["shard"]),
                               shard.first_client, shard.embeddings)
    return Message(protocol.evaluate_reply(sums), reply_to=message)

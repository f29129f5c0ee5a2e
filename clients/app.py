"""The Flower ``ClientApp``: each supernode hosts one shard of simulated clients.

The shard's private data (interactions, negatives, user embeddings) lives in the node's
``context.state``; a decoded copy is cached in the process so a round costs no decoding.
"""

from __future__ import annotations

import uuid

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.local_data import LocalData
from clients.population import build_client_data
from clients.shard import Shard
from federation import checkpoints, protocol
from federation.assignments import assign_strategies, strategy_specs
from federation.config import SimulationConfig
from federation.plan import dataset_for, make_plan
from recsys.data.dataset import Interactions

app = ClientApp()

# node id -> (run token, state version, shard, config): one shard per node, so a node's next run replaces it
# (a sequential sweep in one process keeps one run's shards in memory, not every finished run's)
_SHARDS: dict[int, tuple[str, int, Shard, SimulationConfig]] = {}
_LOCAL = "local"
_META = "shard"
_CSR_FIELDS = ("train", "test", "negatives")


def _local_record(data: LocalData, strategy_index: np.ndarray) -> ArrayRecord:
    arrays = {"users": Array(data.users), "embeddings": Array(data.embeddings), "strategy": Array(strategy_index)}
    for name in _CSR_FIELDS:
        csr = getattr(data, name)
        # int32 halves what Flower's Ray engine ships with the context on every message
        arrays[f"{name}.indptr"], arrays[f"{name}.items"] = Array(csr.indptr), Array(csr.items.astype(np.int32))
    return ArrayRecord(arrays)


def _record_local(record: ArrayRecord) -> tuple[LocalData, np.ndarray]:
    csr = {n: Interactions(record[f"{n}.indptr"].numpy(), record[f"{n}.items"].numpy().astype(np.int64))
           for n in _CSR_FIELDS}
    data = LocalData(users=record["users"].numpy(), embeddings=record["embeddings"].numpy(), **csr)
    return data, record["strategy"].numpy()


def _shard(context: Context) -> tuple[Shard, SimulationConfig]:
    """The node's shard, from the process cache or rebuilt from ``context.state``."""
    meta = context.state.config_records[_META]
    cached = _SHARDS.get(context.node_id)
    if cached is not None and cached[:2] == (str(meta["token"]), meta["version"]):
        return cached[2], cached[3]
    _SHARDS.pop(context.node_id, None)  # free the previous shard before building the next
    config = SimulationConfig.from_json(str(meta["config"]))
    data, strategy_index = _record_local(context.state.array_records[_LOCAL])
    shard = _make_shard(config, data, strategy_index, int(meta["num-items"]))
    _SHARDS[context.node_id] = (str(meta["token"]), int(meta["version"]), shard, config)
    return shard, config


def _make_shard(config: SimulationConfig, data: LocalData, strategy_index: np.ndarray, num_items: int) -> Shard:
    specs = strategy_specs(make_plan(config, dataset_for(config)).assignments)
    return Shard(data, config, num_items, specs, strategy_index, torch.device(config.resolved_device()))


def _save_embeddings(context: Context) -> None:
    """Write the cached shard's p_u back into the node state and bump the version both carry."""
    meta = context.state.config_records[_META]
    token, _, shard, config = _SHARDS[context.node_id]
    meta["version"] = int(meta["version"]) + 1
    context.state.array_records[_LOCAL]["embeddings"] = Array(shard.embeddings.cpu().numpy())
    _SHARDS[context.node_id] = (token, int(meta["version"]), shard, config)


@app.query("setup")
def setup(message: Message, context: Context) -> Message:
    """Build this node's shard: its clients' local data, negatives and initial embeddings."""
    spec = message.content.config_records[protocol.SPEC]
    config = SimulationConfig.from_json(str(spec["config"]))
    first, count, shard_index = int(spec["first-client"]), int(spec["num-clients"]), int(spec["shard"])
    dataset = dataset_for(config)
    plan = make_plan(config, dataset)
    users = np.arange(first, first + count, dtype=np.int64)
    data = build_client_data(config, plan, dataset, users)
    strategy_of = assign_strategies(plan.assignments, plan.num_clients)
    epoch = int(spec["checkpoint-epoch"])
    if epoch >= 0:  # resume: this shard's clients from the committed checkpoint, whatever its shard count
        saved = checkpoints.load_embeddings(config.out, epoch, list(spec["checkpoint-starts"]), first, count)
        data = LocalData(data.users, data.train, data.test, data.negatives, saved)
    context.state.array_records[_LOCAL] = _local_record(data, strategy_of[users])
    context.state.config_records[_META] = ConfigRecord({
        "config": config.to_json(), "token": uuid.uuid4().hex, "version": 0, "shard": shard_index,
        "num-items": dataset.num_items, "targets": list(spec["targets"]),
    })
    _shard(context)
    return Message(RecordDict({protocol.METRICS: MetricRecord({"num-clients": count})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """One round for the selected clients of this shard; each uploads its own ∇Θ_u."""
    shard, _ = _shard(context)
    theta = protocol.record_theta(message.content.array_records[protocol.THETA], shard.device)
    clients = message.content.array_records[protocol.SELECTION]["clients"].numpy()
    round_index = int(message.content.config_records[protocol.ROUND]["round"])
    targets = torch.tensor(list(context.state.config_records[_META]["targets"]), dtype=torch.int64)
    uploads = shard.train_round(theta, clients, round_index, targets)
    _save_embeddings(context)
    return Message(protocol.upload_reply(uploads), reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Metric sums over this shard's benign clients; optionally write the shard's part of the epoch's checkpoint
    (committed by the server afterwards)."""
    shard, config = _shard(context)
    meta = context.state.config_records[_META]
    theta = protocol.record_theta(message.content.array_records[protocol.THETA], shard.device)
    targets = torch.tensor(list(meta["targets"]), dtype=torch.int64)
    sums = shard.evaluate(theta, targets, config.top_k, config.er_ks)
    instruction = message.content.config_records[protocol.ROUND]
    if bool(instruction["checkpoint"]):
        checkpoints.save_shard(config.out, int(instruction["epoch"]), int(meta["shard"]), shard.first_client,
                               shard.embeddings)
    return Message(protocol.evaluate_reply(sums), reply_to=message)

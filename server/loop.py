"""The server's training loop (Flower-independent apart from the ``Grid`` it talks through)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from federation import protocol
from federation.config import ConfigError, SimulationConfig
from federation.plan import Plan, dataset_for, make_plan
from recsys.metrics import RankingSums
from recsys.models.ncf import NCFSpec, Theta, init_theta
from server.aggregation import AGGREGATIONS, apply_update
from server.transport import exchange, wait_for_nodes
from server.validation import Upload, UploadRejected, validate_upload

log = logging.getLogger("fedrec.server")

REPLY_TIMEOUT_S = 600.0
NODE_TIMEOUT_S = 120.0
CHECKPOINT = "checkpoint.pt"


class Observer(Protocol):
    """Receives progress and results (the run folder writer, a progress bar, tests)."""

    def on_start(self, config: SimulationConfig, plan: Plan, rounds_per_epoch: int, start_epoch: int) -> None: ...
    def on_round(self, epoch: int, round_in_epoch: int, stats: dict[str, float | None]) -> None: ...
    def on_evaluation(self, row: dict[str, float], history: list[dict[str, float]]) -> None: ...
    def on_finish(self, history: list[dict[str, float]]) -> None: ...


class UploadNorms:
    """Upload norms ‖∇Θ_u‖ of benign and malicious clients, pooled over rounds (mean and max)."""

    KINDS = ("benign", "malicious")

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {kind: [] for kind in self.KINDS}

    def add(self, upload: Upload) -> None:
        self.values["benign"] += upload.benign_norms
        self.values["malicious"] += upload.malicious_norms

    def extend(self, other: UploadNorms) -> None:
        for kind in self.KINDS:
            self.values[kind] += other.values[kind]

    def summary(self, prefix: str = "") -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for kind, values in self.values.items():
            out[f"{prefix}{kind}_norm_mean"] = float(np.mean(values)) if values else None
            out[f"{prefix}{kind}_norm_max"] = float(np.max(values)) if values else None
            out[f"{prefix}{kind}_measured"] = len(values)
        return out


def epoch_rounds(num_clients: int, per_round: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch: every client once, in random order, in rounds of ``per_round``."""
    order = rng.permutation(num_clients)
    return [order[i : i + per_round] for i in range(0, num_clients, per_round)]


@dataclass
class ServerState:
    """Everything the server needs to resume: Θ, the epoch reached, its RNG and the metric history."""

    theta: Theta
    epoch: int
    rng: np.random.Generator
    config_json: str
    history: list[dict[str, float]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"theta": self.theta, "epoch": self.epoch, "rng": self.rng.bit_generator.state,
                    "config": self.config_json, "history": self.history}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ServerState:
        saved = torch.load(path, weights_only=False)
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]
        return cls(saved["theta"], saved["epoch"], rng, saved["config"], saved["history"])


class FederatedServer:
    """Holds Θ, drives rounds and evaluations over the supernodes of a ``Grid``."""

    def __init__(self, grid, config: SimulationConfig, observer: Observer) -> None:
        self.grid, self.config, self.observer = grid, config, observer
        dataset = dataset_for(config)
        self.plan = make_plan(config, dataset)
        self.spec: NCFSpec = config.model_spec(self.plan.num_items)
        self.aggregate = AGGREGATIONS[config.aggregation]
        self.nodes: list[int] = []
        self.rejected = 0
        self.state = self._initial_state()

    def _initial_state(self) -> ServerState:
        path = Path(self.config.out) / CHECKPOINT
        if self.config.resume:
            if not path.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {path}; run without --resume first")
            state = ServerState.load(path)
            changed = self.config.changed_settings(SimulationConfig.from_json(state.config_json))
            if changed:
                raise ConfigError(f"--resume: settings {changed} differ from the checkpointed run in {path}; "
                                  "resume with the same settings (only --epochs and execution options may change)")
            state.config_json = self.config.to_json()
            return state
        theta = init_theta(self.spec, torch.Generator().manual_seed(self.config.seed))
        return ServerState(theta, 0, np.random.default_rng([self.config.seed, 0]), self.config.to_json())

    # ---- protocol steps ---------------------------------------------------------------
    def _send(self, contents: dict[int, RecordDict], message_type: str) -> dict[int, Message]:
        messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
        return exchange(self.grid, messages, REPLY_TIMEOUT_S)

    def setup(self) -> None:
        self.nodes = wait_for_nodes(self.grid, self.plan.num_shards, NODE_TIMEOUT_S)
        contents = {}
        for shard, node in enumerate(self.nodes):
            users = self.plan.shard_range(shard)
            contents[node] = RecordDict({protocol.SPEC: ConfigRecord({
                "config": self.config.to_json(), "shard": shard, "first-client": int(users[0]) if len(users) else 0,
                "num-clients": len(users), "targets": list(self.plan.targets), "resume": self.config.resume,
            })})
        replies = self._send(contents, protocol.SETUP)
        failed = {node: reply.error.reason for node, reply in replies.items() if reply.has_error()}
        missing = set(self.nodes) - set(replies)
        if failed or missing:
            raise RuntimeError(f"shard setup failed on nodes {sorted(set(failed) | missing)}: {failed}")

    def train_round(self, clients: np.ndarray, round_index: int) -> tuple[float, int, UploadNorms]:
        """Send Θ^t to the shards of the selected clients, validate, aggregate, update Θ."""
        shard_of = self.plan.shard_of(clients)
        contents = {
            self.nodes[shard]: protocol.train_instruction(self.state.theta, clients[shard_of == shard], round_index)
            for shard in np.unique(shard_of)
        }
        sent = {self.nodes[s]: int((shard_of == s).sum()) for s in np.unique(shard_of)}
        uploads: list[Upload] = []
        replies = self._send(contents, protocol.TRAIN)
        for node in contents:
            reply = replies.get(node)
            try:
                if reply is None:
                    raise UploadRejected("no reply before the timeout")
                if reply.has_error():
                    raise UploadRejected(f"client error: {reply.error.reason}")
                uploads.append(validate_upload(reply.content, self.spec, sent[node]))
            except UploadRejected as reason:
                self.rejected += 1
                log.warning("round %d: rejected upload of node %d: %s", round_index, node, reason)
        if uploads:
            apply_update(self.state.theta, self.aggregate(uploads, self.state.theta), self.config.lr)
        norms = UploadNorms()
        for upload in uploads:
            norms.add(upload)
        return sum(u.loss_sum for u in uploads), sum(u.num_clients for u in uploads), norms

    def evaluate(self, checkpoint: bool) -> dict[str, float]:
        content = RecordDict({protocol.THETA: protocol.theta_record(self.state.theta),
                              protocol.ROUND: ConfigRecord({"checkpoint": checkpoint})})
        replies = self._send({node: content for node in self.nodes}, protocol.EVALUATE)
        total = RankingSums.zeros(len(self.config.er_ks), len(self.plan.targets))
        for node in self.nodes:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                raise RuntimeError(f"evaluation failed on node {node}: {reply.error.reason if reply else 'timeout'}")
            total = total + protocol.reply_sums(reply.content, len(self.config.er_ks), len(self.plan.targets))
        return total.finalize(self.config.top_k, self.config.er_ks)

    # ---- the run ------------------------------------------------------------------------
    def run(self) -> list[dict[str, float]]:
        config, state = self.config, self.state
        rounds = -(-self.plan.num_clients // config.clients_per_round)
        self.observer.on_start(config, self.plan, rounds, state.epoch)
        self.setup()
        if not state.history:
            self._record(0, None, 0.0, checkpoint=False)
        round_index = state.epoch * rounds
        for epoch in range(state.epoch + 1, config.epochs + 1):
            start, loss_sum, clients_seen, epoch_norms = time.perf_counter(), 0.0, 0, UploadNorms()
            for r, clients in enumerate(epoch_rounds(self.plan.num_clients, config.clients_per_round, state.rng)):
                loss, count, norms = self.train_round(clients, round_index)
                loss_sum, clients_seen, round_index = loss_sum + loss, clients_seen + count, round_index + 1
                epoch_norms.extend(norms)
                self.observer.on_round(epoch, r + 1, {"epoch": epoch, "round": round_index, **norms.summary()})
            state.epoch = epoch
            checkpoint = config.checkpoint_every > 0 and epoch % config.checkpoint_every == 0
            self._record(epoch, loss_sum / max(clients_seen, 1), time.perf_counter() - start, checkpoint, epoch_norms)
        self.observer.on_finish(state.history)
        return state.history

    def _record(self, epoch: int, loss: float | None, train_seconds: float, checkpoint: bool,
                norms: UploadNorms | None = None) -> None:
        start = time.perf_counter()
        uploads = (norms or UploadNorms()).summary("uploads/")
        row = {"epoch": epoch, **self.evaluate(checkpoint), "train/loss": loss,
               **{k: v for k, v in uploads.items() if not k.endswith("_measured")},
               "rejected_uploads": self.rejected, "seconds": train_seconds}
        row["eval_seconds"] = time.perf_counter() - start
        self.state.history.append(row)
        if checkpoint:
            self.state.save(Path(self.config.out) / CHECKPOINT)
        self.observer.on_evaluation(row, self.state.history)

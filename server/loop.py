"""The server's training loop (Flower-independent apart from the ``Grid`` it talks through)."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from federation import checkpoints, protocol
from federation.checkpoints import CHECKPOINT, CheckpointError
from federation.config import ConfigError, SimulationConfig
from federation.plan import Plan, dataset_for, make_plan
from federation.uploads import ClientUploads
from recsys.atomic import atomic_torch_save
from recsys.metrics import RankingSums
from recsys.models.ncf import NCFSpec, Theta, init_theta
from server.aggregation import RoundInfo, apply_update, load_rule
from server.transport import exchange, wait_for_nodes
from server.validation import Rejection, UploadRejected, validate_uploads

log = logging.getLogger("fedrec.server")

REPLY_TIMEOUT_S = 600.0
NODE_TIMEOUT_S = 120.0
FAULT_ENV = "FEDREC_FAULT"


class RunFailed(RuntimeError):
    """The run cannot go on (e.g. too many uploads were rejected); the message says why and what to check."""


def fault_point(point: str, number: int) -> None:
    """Test hook: ``FEDREC_FAULT=SIGNAL:POINT:N`` (e.g. ``SIGKILL:round:5``) sends SIGNAL to this process when it
    reaches POINT number N: ``round`` (global round index, after Θ's update), ``evaluated`` (an epoch's
    evaluation, shard checkpoint files written), ``reported`` (run-folder files written) or ``committed``
    (``checkpoint.pt`` replaced, older epoch folders not yet removed)."""
    spec = os.environ.get(FAULT_ENV, "")
    name, _, where = spec.partition(":")
    if spec and where == f"{point}:{number}":
        os.kill(os.getpid(), getattr(signal, name))


class Observer(Protocol):
    """Receives progress and results (the run folder writer, a progress bar, tests)."""

    def on_start(self, config: SimulationConfig, plan: Plan, rounds_per_epoch: int, start_epoch: int) -> None: ...
    def on_round(self, epoch: int, round_in_epoch: int, stats: dict[str, float | None]) -> None: ...
    def on_rejections(self, round_index: int, rejections: list[Rejection]) -> None: ...
    def on_evaluation(self, row: dict[str, float], history: list[dict[str, float]]) -> None: ...
    def on_finish(self, history: list[dict[str, float]]) -> None: ...


class EpochStats:
    """Diagnostics measured by the server from the uploads it received, pooled over the rounds of an epoch."""

    def __init__(self) -> None:
        self.norms: dict[str, list[torch.Tensor]] = {"benign": [], "malicious": []}
        self.counters: dict[str, float] = {}
        self.loss_sum, self.benign_clients = 0.0, 0

    def add_round(self, uploads: ClientUploads, malicious: np.ndarray, targets: torch.Tensor,
                  report: dict[str, float], rejected: int) -> dict[str, float | None]:
        """Record one round; return its row for ``rounds.jsonl``."""
        norms = uploads.squared_norms().sqrt().cpu()
        flags = torch.from_numpy(malicious)
        self.norms["benign"].append(norms[~flags])
        self.norms["malicious"].append(norms[flags])
        self.loss_sum += float(uploads.losses.cpu()[~flags].sum())
        self.benign_clients += int((~flags).sum())
        on_target = torch.nonzero(_on_target(uploads.row_items, targets)).view(-1)  # few rows: find their clients
        target_owners = (torch.searchsorted(uploads.row_indptr, on_target, right=True) - 1).cpu()
        row = {
            "uploads/benign_clients": int((~flags).sum()), "uploads/malicious_clients": int(flags.sum()),
            "uploads/benign_norm_mean": _mean(norms[~flags]), "uploads/benign_norm_max": _max(norms[~flags]),
            "uploads/malicious_norm_mean": _mean(norms[flags]), "uploads/malicious_norm_max": _max(norms[flags]),
            "target_rows/uploaders": len(on_target) / max(1, len(targets)),
            "target_rows/malicious_uploaders": int(flags[target_owners].sum()) / max(1, len(targets)),
            "rejected": rejected, **{f"defense/{k}": v for k, v in report.items()},
        }
        for key in ("target_rows/uploaders", "target_rows/malicious_uploaders", *(f"defense/{k}" for k in report)):
            self.counters[key] = self.counters.get(key, 0) + row[key]
        return row

    def summary(self, rounds: int) -> dict[str, float | None]:
        """The epoch row's diagnostics: norm mean/max over every upload, per-round means of the counters."""
        out: dict[str, float | None] = {"train/loss": self.loss_sum / self.benign_clients if self.benign_clients else None}
        for kind, parts in self.norms.items():
            values = torch.cat(parts) if parts else torch.zeros(0)
            out[f"uploads/{kind}_norm_mean"], out[f"uploads/{kind}_norm_max"] = _mean(values), _max(values)
        out.update({k: v / max(1, rounds) for k, v in self.counters.items()})
        return out


def _on_target(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``torch.isin(items, targets)`` for non-negative ids as a lookup in a table of the ids up to the largest
    target (an order of magnitude faster than ``isin`` on a round's ~150k rows)."""
    size = int(targets.max()) + 1 if len(targets) else 0
    table = torch.zeros(size + 1, dtype=torch.bool, device=items.device)
    table[targets.to(items.device)] = True
    return table.index_select(0, items.clamp(max=size))


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if len(values) else None


def _max(values: torch.Tensor) -> float | None:
    return float(values.max()) if len(values) else None


def epoch_rounds(num_clients: int, per_round: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch: every client once, in random order, in rounds of ``per_round``."""
    order = rng.permutation(num_clients)
    return [order[i : i + per_round] for i in range(0, num_clients, per_round)]


@dataclass
class ServerState:
    """Everything the server needs to resume: Θ, the epoch reached, its RNG, the metric history, the aggregation
    rule's state and the client ranges of the shards whose files (``checkpoints/epoch-N/``) belong to it."""

    theta: Theta
    epoch: int
    rng: np.random.Generator
    config_json: str
    history: list[dict[str, float]] = field(default_factory=list)
    rule_state: dict = field(default_factory=dict)
    shard_starts: list[int] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Commit this epoch's checkpoint (the shards' files must be written already)."""
        atomic_torch_save({"theta": self.theta, "epoch": self.epoch, "rng": self.rng.bit_generator.state,
                           "config": self.config_json, "history": self.history, "rule": self.rule_state,
                           "shard_starts": self.shard_starts}, path)

    @classmethod
    def load(cls, path: Path) -> ServerState:
        saved = torch.load(path, weights_only=False)
        if "shard_starts" not in saved:
            raise CheckpointError(f"{path} was written before checkpoints held their shards' epoch; "
                                  "start the run over with --overwrite")
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]
        return cls(saved["theta"], saved["epoch"], rng, saved["config"], saved["history"], saved["rule"],
                   list(saved["shard_starts"]))


class FederatedServer:
    """Holds Θ, drives rounds and evaluations over the supernodes of a ``Grid``."""

    def __init__(self, grid, config: SimulationConfig, observer: Observer) -> None:
        self.grid, self.config, self.observer = grid, config, observer
        dataset = dataset_for(config)
        self.plan = make_plan(config, dataset)
        self.spec: NCFSpec = config.model_spec(self.plan.num_items)
        self.rule = load_rule(config, self.spec)
        self.malicious = np.zeros(self.plan.num_clients, dtype=bool)
        self.malicious[list(self.plan.malicious_ids)] = True
        self.targets = torch.tensor(self.plan.targets, dtype=torch.int64)
        self.nodes: list[int] = []
        self.rejected = 0
        self.state = self._initial_state()
        self.rule.load_state_dict(self.state.rule_state)
        self.rejected = int(self.state.history[-1]["rejected_uploads"]) if self.state.history else 0

    def _initial_state(self) -> ServerState:
        """The checkpointed state (``--resume``, checked before anything in the run folder changes) or a fresh
        one (refused when ``--out`` already holds a run, unless ``--overwrite``)."""
        out = Path(self.config.out)
        path = out / CHECKPOINT
        if self.config.resume:
            state = self._checkpointed_state(path)
            checkpoints.remove_other_epochs(out, keep=state.epoch)  # uncommitted leftovers of the interrupted run
            return state
        if holds_run(out):
            if not self.config.overwrite:
                raise ConfigError(f"{out} already holds a run; pass --resume to continue it or --overwrite to "
                                  "replace it (or choose another --out)")
            path.unlink(missing_ok=True)
            checkpoints.remove_other_epochs(out, keep=None)
        theta = init_theta(self.spec, torch.Generator().manual_seed(self.config.seed))
        return ServerState(theta, 0, np.random.default_rng([self.config.seed, 0]), self.config.to_json(),
                           shard_starts=list(self.plan.shard_starts))

    def _checkpointed_state(self, path: Path) -> ServerState:
        if self.config.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
        if not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {path}; start the run without --resume "
                                  "(with --overwrite if the folder holds an unfinished run)")
        state = ServerState.load(path)
        changed = self.config.changed_settings(SimulationConfig.from_json(state.config_json))
        if changed:
            raise ConfigError(f"--resume: settings {changed} differ from the checkpointed run in {path}; resume "
                              "with the same settings (only --epochs and execution options may change)")
        if self.config.epochs < state.epoch:
            raise ConfigError(f"--resume: --epochs {self.config.epochs} is below the checkpointed epoch "
                              f"{state.epoch} of {path}")
        checkpoints.check_shards(self.config.out, state.epoch, state.shard_starts)
        state.config_json = self.config.to_json()
        return state

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
                "num-clients": len(users), "targets": list(self.plan.targets),
                "checkpoint-epoch": self.state.epoch if self.config.resume else -1,
                "checkpoint-starts": list(self.state.shard_starts),
            })})
        replies = self._send(contents, protocol.SETUP)
        failed = {node: reply.error.reason for node, reply in replies.items() if reply.has_error()}
        missing = set(self.nodes) - set(replies)
        if failed or missing:
            raise RuntimeError(f"shard setup failed on nodes {sorted(set(failed) | missing)}: {failed}")

    def train_round(self, clients: np.ndarray, round_index: int, stats: EpochStats) -> dict[str, float | None]:
        """Send Θ^t to the shards of the selected clients, validate every client's upload, aggregate, update Θ."""
        shard_of = self.plan.shard_of(clients)
        selected = {self.nodes[s]: clients[shard_of == s] for s in np.unique(shard_of)}
        contents = {node: protocol.train_instruction(self.state.theta, ids, round_index) for node, ids in selected.items()}
        replies = self._send(contents, protocol.TRAIN)
        parts: list[ClientUploads] = []
        rejections: list[Rejection] = []
        for node, ids in selected.items():
            reply = replies.get(node)
            try:
                if reply is None:
                    raise UploadRejected("no reply before the timeout")
                if reply.has_error():
                    raise UploadRejected(f"client error: {reply.error.reason}")
                if protocol.UPDATE not in reply.content.array_records:
                    raise UploadRejected(f"reply holds no '{protocol.UPDATE}' record")
                valid, rejected = validate_uploads(reply.content.array_records[protocol.UPDATE], self.spec, ids)
            except UploadRejected as reason:
                rejections += [Rejection(int(c), str(reason)) for c in ids]
                continue
            answered = np.concatenate([valid.client_ids, np.array([r.client for r in rejected], dtype=np.int64)])
            missing = np.setdiff1d(ids, answered)
            rejections += rejected + [Rejection(int(c), "no upload in the node's reply") for c in missing]
            parts.append(valid)
        for rejection in rejections:
            log.warning("round %d: rejected the upload of client %d: %s", round_index, rejection.client, rejection.reason)
        self.rejected += len(rejections)
        self._check_rejections(round_index, len(clients), rejections)
        uploads = ClientUploads.concat(parts).sorted_by_client() if parts else ClientUploads.empty(self.spec)
        malicious = self.malicious[uploads.client_ids]
        result = self.rule.aggregate(uploads, RoundInfo(round_index, self.targets, malicious))
        apply_update(self.state.theta, result.step, self.config.lr)
        self.state.rule_state = self.rule.state_dict()
        row = stats.add_round(uploads, malicious, self.targets, result.report, len(rejections))
        self.observer.on_rejections(round_index, rejections)
        return row

    def _check_rejections(self, round_index: int, selected: int, rejections: list[Rejection]) -> None:
        """Stop the run when every upload of the round, or more than ``max_rejected`` of them, was rejected."""
        limit = self.config.max_rejected
        if rejections and (len(rejections) == selected or len(rejections) > limit * selected):
            self.observer.on_rejections(round_index, rejections)
            first = rejections[0]
            raise RunFailed(f"round {round_index}: {len(rejections)} of {selected} uploads were rejected (limit: "
                            f"every upload, or more than --max-rejected {limit:g} of them); first: client "
                            f"{first.client}: {first.reason} (all reasons: rejections.jsonl)")

    def evaluate(self, checkpoint: bool, epoch: int) -> dict[str, float]:
        content = RecordDict({protocol.THETA: protocol.theta_record(self.state.theta),
                              protocol.ROUND: ConfigRecord({"checkpoint": checkpoint, "epoch": epoch})})
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
            self._record(0, 0.0, checkpoint=config.checkpoint_every > 0, diagnostics={})
        round_index = state.epoch * rounds
        for epoch in range(state.epoch + 1, config.epochs + 1):
            start, stats = time.perf_counter(), EpochStats()
            for r, clients in enumerate(epoch_rounds(self.plan.num_clients, config.clients_per_round, state.rng)):
                row = self.train_round(clients, round_index, stats)
                round_index += 1
                self.observer.on_round(epoch, r + 1, {"epoch": epoch, "round": round_index, **row})
                fault_point("round", round_index - 1)
            state.epoch = epoch
            checkpoint = config.checkpoint_every > 0 and epoch % config.checkpoint_every == 0
            self._record(epoch, time.perf_counter() - start, checkpoint, stats.summary(rounds))
        self.observer.on_finish(state.history)
        return state.history

    def _record(self, epoch: int, train_seconds: float, checkpoint: bool, diagnostics: dict[str, float | None]) -> None:
        start = time.perf_counter()
        diagnostics = diagnostics or EpochStats().summary(0)
        row = {"epoch": epoch, **self.evaluate(checkpoint, epoch), **diagnostics, "rejected_uploads": self.rejected,
               "seconds": train_seconds}
        fault_point("evaluated", epoch)
        row["eval_seconds"] = time.perf_counter() - start
        self.state.history.append(row)
        self.observer.on_evaluation(row, self.state.history)
        fault_point("reported", epoch)
        if checkpoint:  # the shards wrote checkpoints/epoch-N/ while evaluating; this commits it
            self.state.shard_starts = list(self.plan.shard_starts)
            self.state.save(Path(self.config.out) / CHECKPOINT)
            fault_point("committed", epoch)
            checkpoints.remove_other_epochs(self.config.out, keep=epoch)


def holds_run(out: Path) -> bool:
    """Whether ``out`` holds (part of) an earlier run."""
    return (out / "config.json").is_file() or (out / CHECKPOINT).is_file() or (out / checkpoints.FOLDER).is_dir()

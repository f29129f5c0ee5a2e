"""Central mode on Flower: a ``ServerApp`` holding Θ and one supernode whose ``ClientApp`` holds
every user and trains a ``CentralLearner`` for one epoch per round.

Each round the server sends Θ, the client trains an epoch locally (its own optimiser state and
user-side parameters never leave it) and uploads Θ'; the server validates it (names, shapes,
dtypes, finite values) before adopting it. With one round per epoch the Flower overhead is a
few milliseconds per epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from central.learner import CentralLearner, Parameters
from federation.protocol import METRICS, THETA, record_theta, theta_record
from harness.inprocess import run_inprocess
from server.transport import exchange, wait_for_nodes
from server.validation import UploadRejected, validate_parameters

log = logging.getLogger("fedrec.central")

SETUP, FINISH = "query.setup", "query.finish"
EPOCH = "epoch"
REPLY_TIMEOUT_S = 24 * 3600.0  # one round is a whole epoch of local training

EpochCallback = Callable[[dict[str, float]], None]


def _scalars(metrics: dict[str, float]) -> MetricRecord:
    return MetricRecord({name: float(value) for name, value in metrics.items()})


def make_client_app(learner: CentralLearner) -> ClientApp:
    """The one supernode: it owns ``learner`` (all users, their data and parameters)."""
    app = ClientApp()

    def reply(message: Message, metrics: dict[str, float], with_theta: bool) -> Message:
        content = RecordDict({METRICS: _scalars(metrics)})
        if with_theta:
            content[THETA] = theta_record(learner.shared_parameters())
        return Message(content, reply_to=message)

    def adopt(message: Message) -> None:
        learner.load_shared_parameters(record_theta(message.content.array_records[THETA]))

    @app.query("setup")
    def setup(message: Message, context: Context) -> Message:
        return reply(message, {}, with_theta=True)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        adopt(message)
        metrics = learner.train_epoch(int(message.content.config_records[EPOCH][EPOCH]))
        return reply(message, metrics, with_theta=True)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        adopt(message)
        return reply(message, learner.evaluate(), with_theta=False)

    @app.query("finish")
    def finish(message: Message, context: Context) -> Message:
        adopt(message)
        learner.finish()
        return reply(message, learner.evaluate(), with_theta=True)

    return app


class CentralServer:
    """Holds Θ and drives the rounds: train (one epoch), validate, adopt, evaluate."""

    def __init__(self, grid: Grid, epochs: int, evaluate_every: int, on_epoch: EpochCallback | None) -> None:
        self.grid, self.epochs, self.evaluate_every, self.on_epoch = grid, epochs, evaluate_every, on_epoch
        self.node = wait_for_nodes(grid, 1, 60.0)[0]
        self.theta: Parameters = {}
        self.rejected = 0
        self.history: list[dict[str, float]] = []

    def _ask(self, message_type: str, content: RecordDict) -> RecordDict:
        reply = exchange(self.grid, [Message(content, dst_node_id=self.node, message_type=message_type)],
                         REPLY_TIMEOUT_S).get(self.node)
        if reply is None:
            raise RuntimeError(f"central client did not answer {message_type!r}")
        if reply.has_error():
            raise RuntimeError(f"central client failed on {message_type!r}: {reply.error.reason}")
        return reply.content

    def _with_theta(self, **config: int) -> RecordDict:
        return RecordDict({THETA: theta_record(self.theta), EPOCH: ConfigRecord(config or {EPOCH: 0})})

    def _adopt(self, content: RecordDict, where: str) -> None:
        try:
            if THETA not in content.array_records:
                raise UploadRejected(f"no '{THETA}' record")
            self.theta = validate_parameters(content.array_records[THETA], self.theta)
        except UploadRejected as reason:
            self.rejected += 1
            log.warning("%s: rejected the client's parameters, keeping Θ: %s", where, reason)

    def _record(self, epoch: int, metrics: dict[str, float], seconds: float) -> None:
        row = {EPOCH: epoch, **metrics, "rejected_uploads": self.rejected, "seconds": seconds}
        self.history.append(row)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def run(self) -> None:
        content = self._ask(SETUP, RecordDict())
        self.theta = {name: value.clone() for name, value in record_theta(content.array_records[THETA]).items()}
        evaluation = dict(self._ask("evaluate", self._with_theta())[METRICS])
        self._record(0, evaluation, 0.0)
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            content = self._ask("train", self._with_theta(epoch=epoch))
            self._adopt(content, f"epoch {epoch}")
            metrics = dict(content[METRICS])
            seconds = time.perf_counter() - start
            if epoch % self.evaluate_every == 0 or epoch == self.epochs:
                metrics.update(self._ask("evaluate", self._with_theta())[METRICS])
            self._record(epoch, metrics, seconds)
        content = self._ask(FINISH, self._with_theta())
        self._adopt(content, "finish")
        self.history.append({EPOCH: -1, **dict(content[METRICS]), "rejected_uploads": self.rejected, "seconds": 0.0})


def train_central(
    learner: CentralLearner,
    epochs: int,
    *,
    evaluate_every: int = 1,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train ``learner`` for ``epochs`` rounds through Flower (one in-process supernode).

    Returns one row per evaluation point: epoch 0 (before training), each trained epoch (its
    training metrics, plus evaluation metrics every ``evaluate_every`` epochs and at the last),
    and a final row with ``epoch = -1`` holding ``learner.evaluate()`` after ``learner.finish()``.
    The learner ends holding the server's final Θ.
    """
    if epochs < 0 or evaluate_every < 1:
        raise ValueError(f"epochs must be >= 0 and evaluate_every >= 1, got {epochs} and {evaluate_every}")
    server_app = ServerApp()
    result: list[CentralServer] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        server = CentralServer(grid, epochs, evaluate_every, on_epoch)
        result.append(server)
        server.run()

    run_inprocess(server_app, make_client_app(learner), 1)
    return result[0].history

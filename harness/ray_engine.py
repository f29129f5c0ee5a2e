"""Flower's simulation engine with Ray workers: one actor per ``client_num_cpus`` cores, on one
machine or a Ray cluster (set ``RAY_ADDRESS`` to join one).

Two changes to Flower's engine, both confined to this run: instructions reach the actors after a 1 ms
instead of a 100 ms poll, and every node is pinned to one actor (node k → actor k mod A) instead of
going to whichever actor is idle, so each actor builds only its own nodes' shards from the dataset and
keeps their state in memory: a message carries Θ and the selected client ids, its ``Context`` a few
settings and a version number. An actor on the driver's machine gets its messages and sends its replies (a
shard's per-client uploads, a few MB) over a Unix socket instead of through Ray calls (``LocalChannels``).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from queue import Queue

import ray
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException, LoadClientAppError
from flwr.common.constant import PARTITION_ID_KEY
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.simulation.ray_transport.ray_actor import BasicActorPool, VirtualClientEngineActor
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from clients.app import PINNED
from federation.config import SimulationConfig, usable_cores

DELIVERY_POLL_S = 0.001


def _deliver_promptly(state, queue: Queue[Message], nodes_mapping, f_stop: threading.Event) -> None:
    """Flower's ``vce_api.add_messages_to_queue`` with a 1 ms instead of a 100 ms poll.

    The engine moves pending instructions from the link state to its worker queue in this
    loop; at 0.1 s per pass it adds ~0.1 s to every round (2.4 s per ML-1M epoch).
    """
    while not f_stop.is_set():
        found = False
        for node_id in nodes_mapping.keys():
            for message in state.get_message_ins(node_id=node_id, limit=None):
                queue.put(message)
                found = True
        if not found:
            f_stop.wait(DELIVERY_POLL_S)


LOCAL_SOCKETS = True  # actors on the driver's machine get their messages over a Unix socket, not through Ray
SOCKET_FOLDER: str | None = None  # where the sockets are bound for the handshake (None: the system's temp folder)
_HEADER = struct.Struct("!Q")


def _send(conn: socket.socket, value: object) -> None:
    """Send ``value`` pickled, after its length."""
    blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    conn.sendall(_HEADER.pack(len(blob)))
    conn.sendall(blob)


def _receive_exactly(conn: socket.socket, size: int) -> bytearray | None:
    buffer, filled = bytearray(size), 0
    view = memoryview(buffer)
    while filled < size:
        got = conn.recv_into(view[filled:])
        if got == 0:
            return None
        filled += got
    return buffer


def _receive(conn: socket.socket) -> object | None:
    """The next value ``_send`` sent, or None when the other side closed the connection."""
    header = _receive_exactly(conn, _HEADER.size)
    if header is None:
        return None
    blob = _receive_exactly(conn, _HEADER.unpack(header)[0])
    return None if blob is None else pickle.loads(blob)


@dataclass
class _Failure:
    """A ClientApp's exception, carried back as the error Flower's own actor raises (its class and message)."""

    load_error: bool
    text: str

    def exception(self) -> Exception:
        return LoadClientAppError(self.text) if self.load_error else ClientAppException(self.text)


class SocketClientActor(VirtualClientEngineActor):
    """Flower's client actor (``run`` as in its ``ClientAppActor``) that can also serve a node's messages over a
    Unix socket from the driver on its machine.

    Through Ray, a round's call took ~20 ms for ~11 ms of ClientApp on ML-1M with two shards (the reply, a shard's
    per-client uploads, is a few MB); over the socket the engine's worker thread writes the pickled message and
    reads the pickled reply, and Ray only started the serving loop.
    """

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def serve(self, app_fn: Callable[[], ClientApp], address: str) -> None:
        """Connect to ``address`` and answer ``(message, cid, context)`` requests with ``(reply, context)`` (or a
        ``_Failure``) until the driver closes the connection."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            while (request := _receive(conn)) is not None:
                message, cid, context = request
                try:
                    _, reply, updated = self.run(app_fn, message, cid, context)
                    _send(conn, (reply, updated))
                except Exception as error:  # Flower's engine turns it into the node's error reply
                    cause = (error.__cause__ or error) if isinstance(error, ClientAppException) else error
                    _send(conn, _Failure(isinstance(error, LoadClientAppError), str(cause)))


SocketClientActorRemote = ray.remote(SocketClientActor)


class LocalChannels:
    """The driver's side: one connected socket per actor on this machine (None for the others, which Ray calls).

    The sockets are bound in a private folder only for the handshake; the folder is gone once all are connected.
    """

    def __init__(self, actors: list, app_fn: Callable[[], ClientApp], folder: str | None,
                 connect_timeout_s: float = 60.0) -> None:
        self.actors, self.app_fn = actors, app_fn
        self.conns: list[socket.socket | None] = [None] * len(actors)
        self.serving: list = [None] * len(actors)
        if not LOCAL_SOCKETS:
            return
        here = ray.get_runtime_context().get_node_id()
        local = [k for k, node in enumerate(ray.get([actor.node_id.remote() for actor in actors])) if node == here]
        if not local:
            return
        handshake = tempfile.mkdtemp(prefix="fedrec-actors-", dir=folder)
        try:
            for k in local:
                self.conns[k] = self._connect(k, os.path.join(handshake, f"actor-{k}"), connect_timeout_s)
        finally:
            shutil.rmtree(handshake, ignore_errors=True)

    def _connect(self, index: int, address: str, timeout_s: float) -> socket.socket | None:
        """Actor ``index``'s connection, or None (Ray calls) where ``address`` cannot be bound (e.g. a path over
        the ~108 bytes a Unix socket address may have)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            try:
                listener.bind(address)
            except OSError:
                return None
            listener.listen(1)
            listener.settimeout(timeout_s)
            self.serving[index] = self.actors[index].serve.remote(self.app_fn, address)
            try:
                conn, _ = listener.accept()
            except TimeoutError as error:
                raise RuntimeError(f"Ray actor {index} did not connect to {address} within {timeout_s:.0f} s; "
                                   "set harness.ray_engine.LOCAL_SOCKETS = False to use Ray calls only") from error
        conn.settimeout(None)
        return conn

    def call(self, index: int, message: Message, context: Context) -> tuple[Message, Context]:
        """Run ``message`` on actor ``index`` and return its reply and updated context."""
        conn = self.conns[index]
        if conn is None:
            _, reply, updated = ray.get(self.actors[index].run.remote(self.app_fn, message, str(index), context))
            return reply, updated
        try:
            _send(conn, (message, str(index), context))
            outcome = _receive(conn)
        except (BrokenPipeError, ConnectionResetError):
            outcome = None
        if outcome is None:
            ray.get(self.serving[index])  # raises the actor's error (e.g. its process died)
            raise RuntimeError(f"Ray actor {index} closed its connection without replying")
        if isinstance(outcome, _Failure):
            raise outcome.exception()
        return outcome

    def close(self) -> None:
        """Close the connections: every serving loop returns."""
        for conn in self.conns:
            if conn is not None:
                conn.close()
        serving = [ref for ref in self.serving if ref is not None]
        ray.wait(serving, num_returns=len(serving), timeout=10)
        self.serving = [None] * len(self.actors)  # released while Ray is up


class PinnedRayBackend(raybackend.RayBackend):
    """Flower's Ray backend with node k's messages always run by actor k mod A, one at a time per actor.

    It marks each node's context ``PINNED``, which lets the client app keep the node's state in the actor.
    Worker threads: one per node, so a node waiting for its busy actor never holds up another actor.
    """

    def __init__(self, backend_config: dict, num_nodes: int) -> None:
        super().__init__(backend_config)
        self.num_nodes = num_nodes
        self.actors: list = []
        self.locks: list[threading.Lock] = []
        self.channels: LocalChannels | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.pool = BasicActorPool(actor_type=SocketClientActorRemote, client_resources=self.client_resources,
                                   actor_kwargs={})
        self.pool.add_actors_to_pool(self.pool.actors_capacity)
        self.actors = list(self.pool.pool)
        self.locks = [threading.Lock() for _ in self.actors]
        self.channels = LocalChannels(self.actors, app_fn, SOCKET_FOLDER)

    @property
    def num_workers(self) -> int:
        return max(len(self.actors), self.num_nodes)

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        index = int(context.node_config[PARTITION_ID_KEY]) % len(self.actors)
        context.node_config[PINNED] = True
        with self.locks[index]:
            return self.channels.call(index, message, context)

    def terminate(self) -> None:
        if self.channels is not None:
            self.channels.close()
        super().terminate()


@contextmanager
def _engine_patches(num_nodes: int) -> Iterator[None]:
    """Swap the prompt delivery loop and the pinned backend into Flower's engine for one run."""
    originals = vce_api.add_messages_to_queue, raybackend.RayBackend
    vce_api.add_messages_to_queue = _deliver_promptly
    raybackend.RayBackend = lambda backend_config: PinnedRayBackend(backend_config, num_nodes)
    try:
        yield
    finally:
        vce_api.add_messages_to_queue, raybackend.RayBackend = originals


INLINE_BYTES = 16 * 2**20  # a message up to this size travels inside the task call, not through the object store


def ray_init_args() -> dict:
    """``ray.init`` settings: join ``RAY_ADDRESS`` when set, else start a local Ray with this process's cores whose
    task calls carry objects up to ``INLINE_BYTES`` inline (Θ and a shard's uploads, a few MB: on ML-1M with two
    shards the epoch took 0.66 s instead of 0.76 s through the shared-memory store; a cluster keeps its own
    settings)."""
    args = {"logging_level": logging.ERROR, "log_to_driver": True, "include_dashboard": False}
    if not os.environ.get("RAY_ADDRESS"):
        args["num_cpus"] = usable_cores()
        args["_system_config"] = {"max_direct_call_object_size": INLINE_BYTES,
                                  "task_rpc_inlined_bytes_limit": 4 * INLINE_BYTES}
    return args


def run_ray(server_app: ServerApp, client_app: ClientApp, num_nodes: int, config: SimulationConfig) -> None:
    """Run through ``flwr.simulation.run_simulation`` with the configured client resources."""
    backend_config = {
        "client_resources": {"num_cpus": config.client_num_cpus, "num_gpus": config.client_num_gpus},
        "init_args": ray_init_args(),
    }
    with _engine_patches(num_nodes):
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_nodes,
                       backend_config=backend_config)

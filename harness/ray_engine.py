"""Flower's simulation engine with Ray workers: one actor per ``client_num_cpus`` cores, on one
machine or a Ray cluster (set ``RAY_ADDRESS`` to join one).

Two changes to Flower's engine, both confined to this run: instructions reach the actors after a 1 ms
instead of a 100 ms poll, and every node is pinned to one actor (node k → actor k mod A) instead of
going to whichever actor is idle, so each actor builds only its own nodes' shards from the dataset and
keeps their state in memory: a message carries Θ and the selected client ids, its ``Context`` a few
settings and a version number. An actor on the driver's machine hands its reply (a shard's per-client
uploads, a few MB) over in a shared-memory file instead of through Ray (``SharedMemoryReplies``).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from queue import Queue

import ray
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
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


SHARED_MEMORY = "/dev/shm"


class ReplyFileWriter(VirtualClientEngineActor):
    """Flower's client actor (``run`` as in its ``ClientAppActor``) that can also write its reply into a file the
    driver reads.

    A shard's reply is a few MB of per-client uploads; through Ray it took ~10 ms on ML-1M, through a
    file in shared memory pickling and writing take ~1.5 ms. One file per actor, rewritten in
    place by each call (the driver reads it before it sends that actor the next message).
    """

    def __init__(self) -> None:
        self.reply_fd: int | None = None

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def run_into_file(self, app_fn: Callable[[], ClientApp], message: Message, cid: str, context: Context,
                      path: str) -> int | tuple[Message, Context]:
        """Run the ClientApp like ``run`` and write the pickled ``(reply, context)`` to ``path``; return its
        size, or the pair itself when the file cannot take it (shared memory full)."""
        _, reply, updated = self.run(app_fn, message, cid, context)
        blob = pickle.dumps((reply, updated), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            if self.reply_fd is None:
                self.reply_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            written = os.pwrite(self.reply_fd, blob, 0)
        except OSError:
            written = 0
        return len(blob) if written == len(blob) else (reply, updated)


ReplyFileActor = ray.remote(ReplyFileWriter)


class SharedMemoryReplies:
    """The driver's side of the reply files: one per actor on this machine, in a folder removed at the end."""

    def __init__(self, actors: list, folder: str | None) -> None:
        self.actors = actors
        usable = folder is not None and os.path.isdir(folder)
        self.folder = tempfile.mkdtemp(prefix="fedrec-replies-", dir=folder) if usable else None
        self.paths: list[str | None] = [None] * len(actors)
        if self.folder is not None:
            here = ray.get_runtime_context().get_node_id()
            nodes = ray.get([actor.node_id.remote() for actor in actors])
            self.paths = [os.path.join(self.folder, f"actor-{k}") if node == here else None
                          for k, node in enumerate(nodes)]

    def call(self, index: int, app_fn: Callable[[], ClientApp], message: Message,
             context: Context) -> tuple[Message, Context]:
        """Run ``message`` on actor ``index`` and return its reply and updated context."""
        actor, path = self.actors[index], self.paths[index]
        if path is None:
            _, reply, updated = ray.get(actor.run.remote(app_fn, message, str(index), context))
            return reply, updated
        result = ray.get(actor.run_into_file.remote(app_fn, message, str(index), context, path))
        if not isinstance(result, int):
            return result
        with open(path, "rb", buffering=0) as handle:
            return pickle.loads(handle.read(result))

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


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
        self.replies: SharedMemoryReplies | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.pool = BasicActorPool(actor_type=ReplyFileActor, client_resources=self.client_resources,
                                   actor_kwargs={})
        self.pool.add_actors_to_pool(self.pool.actors_capacity)
        self.app_fn = app_fn
        self.actors = list(self.pool.pool)
        self.locks = [threading.Lock() for _ in self.actors]
        self.replies = SharedMemoryReplies(self.actors, SHARED_MEMORY)

    @property
    def num_workers(self) -> int:
        return max(len(self.actors), self.num_nodes)

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        index = int(context.node_config[PARTITION_ID_KEY]) % len(self.actors)
        context.node_config[PINNED] = True
        with self.locks[index]:
            return self.replies.call(index, self.app_fn, message, context)

    def terminate(self) -> None:
        super().terminate()
        if self.replies is not None:
            self.replies.close()


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

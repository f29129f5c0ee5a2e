"""The client-strategy interface: how a batch of simulated clients computes its upload.

A strategy receives Θ^t (exactly what the server sent), the selected clients' local state as
one batch, and returns Σ_u ∇Θ_u over that batch plus the clients' new user embeddings. Honest
clients train NCF with BCE (eqs. 4–5); attacks are strategies too. Plug in your own with
``--client-strategy mypkg.mymod:MyStrategy`` or ``--client-strategy path/to/file.py:MyStrategy``,
optionally for a subset of clients: ``...:MyStrategy@0-99,250``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.models.ncf import NCFSpec, Theta, weighted_bce_grads


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know besides its own clients: the model shape, η, the target items and a seeded RNG."""

    spec: NCFSpec
    lr: float
    targets: torch.Tensor  # int64 item ids the experiment tracks (ER@K)
    round: int
    generator: torch.Generator


@dataclass
class LocalBatch:
    """The selected clients of one strategy in one round, stacked.

    Sample ``s`` belongs to client ``owner[s]`` (a row of ``embeddings``); a client's samples are
    its positives (label 1) followed by its fixed negatives (label 0).
    """

    client_ids: np.ndarray  # global ids, int64 [B]
    embeddings: torch.Tensor  # p_u^t, [B, d]
    items: torch.Tensor  # int64 [S]
    labels: torch.Tensor  # float [S]
    owner: torch.Tensor  # int64 [S], index into the batch
    counts: torch.Tensor  # float [B], samples per client


@dataclass
class ClientUpdate:
    """Σ_u ∇Θ_u over a batch (dense, keyed like Θ), the clients' p_u^{t+1}, and their summed loss."""

    grads: Theta
    embeddings: torch.Tensor
    loss_sum: float
    num_clients: int


class ClientStrategy(ABC):
    """Base class of every client behaviour (honest or malicious)."""

    name: str = "custom"
    benign: bool = True  # whether its clients count in the test and ER@K metrics (benign users)

    @abstractmethod
    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        """Compute the batch's upload for Θ^t = ``theta`` (do not modify ``theta`` in place)."""


def bce_step(theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
    """Every client's mean BCE over its own samples (L_u); one pass gives each ∇p_u (p_u appears
    only in L_u) and Σ_u ∇Θ_u; then p_u ← p_u − η ∇p_u (eq. 5)."""
    loss, grads, user_grad = weighted_bce_grads(
        theta, batch.embeddings, batch.owner, batch.items, batch.labels,
        1.0 / batch.counts[batch.owner], ctx.spec.num_linear,
    )
    return ClientUpdate(grads, batch.embeddings - ctx.lr * user_grad, float(loss), len(batch.client_ids))


class HonestStrategy(ClientStrategy):
    """A benign client: local NCF training with BCE on its own positives and sampled negatives."""

    name = "honest"

    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        return bce_step(theta, batch, ctx)


STRATEGIES: dict[str, type[ClientStrategy]] = {"honest": HonestStrategy}


def load_strategy_class(spec: str) -> type[ClientStrategy]:
    """Resolve a registry name, ``package.module:Class`` or ``path/to/file.py:Class``."""
    if spec in STRATEGIES:
        return STRATEGIES[spec]
    if ":" not in spec:
        raise ValueError(f"unknown client strategy {spec!r}: use one of {sorted(STRATEGIES)}, "
                         "'package.module:Class' or 'path/to/file.py:Class'")
    module_name, _, class_name = spec.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"client strategy file {path} does not exist")
        unique_name = f"fedrec_plugin_{abs(hash(str(path)))}"
        module = sys.modules.get(unique_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(unique_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[unique_name] = module
            module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"cannot import client strategy module {module_name!r}: {error}") from error
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ClientStrategy)):
        raise ValueError(f"{spec!r} is not a subclass of clients.strategy.ClientStrategy")
    return cls


@dataclass(frozen=True)
class StrategyAssignment:
    """A strategy spec and the client ids it drives (``None``: every client not claimed by another)."""

    spec: str
    clients: tuple[int, ...] | None

    @classmethod
    def parse(cls, text: str) -> StrategyAssignment:
        """``SPEC`` or ``SPEC@IDS`` with IDS like ``0-99,250``."""
        spec, sep, ids = text.partition("@")
        if not sep:
            return cls(spec, None)
        clients: list[int] = []
        for part in ids.split(","):
            lo, dash, hi = part.strip().partition("-")
            try:
                clients.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
            except ValueError:
                raise ValueError(f"bad client id list {ids!r} in {text!r}: expected e.g. 0-99,250") from None
        return cls(spec, tuple(sorted(set(clients))))

    def __str__(self) -> str:
        return self.spec if self.clients is None else f"{self.spec}@{','.join(map(str, self.clients))}"


def strategy_specs(assignments: tuple[StrategyAssignment, ...]) -> list[str]:
    """The strategies in use; index 0 drives every client no assignment claims (honest by default)."""
    defaults = [a.spec for a in assignments if a.clients is None]
    if len(defaults) > 1:
        raise ValueError(f"several default client strategies given: {defaults}; give ids with SPEC@IDS")
    return [defaults[0] if defaults else "honest"] + [a.spec for a in assignments if a.clients is not None]


def assign_strategies(assignments: tuple[StrategyAssignment, ...], num_clients: int) -> np.ndarray:
    """Each client's index into ``strategy_specs(assignments)`` (a later assignment wins)."""
    index = np.zeros(num_clients, dtype=np.int64)
    explicit = [a for a in assignments if a.clients is not None]
    for position, assignment in enumerate(explicit, start=1):
        ids = np.asarray(assignment.clients, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= num_clients):
            raise ValueError(f"client ids of {assignment} out of range 0..{num_clients - 1}")
        index[ids] = position
    return index

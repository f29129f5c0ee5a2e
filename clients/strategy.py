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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from recsys.models.ncf import NCFSpec, Theta, per_client_grad_norms, weighted_bce_grads

if TYPE_CHECKING:
    from federation.config import SimulationConfig


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know besides its own clients: the model shape, η, the target items, the run's
    settings (attack hyper-parameters, ``config.extra`` for plug-ins) and seeded RNGs."""

    spec: NCFSpec
    lr: float
    targets: torch.Tensor  # int64 item ids the experiment tracks (ER@K)
    round: int
    generator: torch.Generator  # for the strategy's own random draws
    config: SimulationConfig
    diagnostics_rng: np.random.Generator  # picks the clients whose upload norms are logged (never the math)


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
    """Σ_u ∇Θ_u over a batch (dense, keyed like Θ), the clients' p_u^{t+1}, their summed loss, and the
    norms ‖∇Θ_u‖ of the uploads of the clients the strategy measured (for diagnostics; may be empty)."""

    grads: Theta
    embeddings: torch.Tensor
    loss_sum: float
    num_clients: int
    upload_norms: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


class ClientStrategy(ABC):
    """Base class of every client behaviour (honest or malicious)."""

    name: str = "custom"
    benign: bool = True  # whether its clients count in the test and ER@K metrics (benign users)

    @abstractmethod
    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        """Compute the batch's upload for Θ^t = ``theta`` (do not modify ``theta`` in place)."""

    @classmethod
    def fake_profiles(cls, num_clients: int, targets: np.ndarray, num_items: int, config: SimulationConfig,
                      rng: np.random.Generator) -> list[np.ndarray]:
        """Local positives of ``num_clients`` clients injected with this strategy (``--attack``); none by default."""
        return [np.zeros(0, dtype=np.int64) for _ in range(num_clients)]


@dataclass
class WeightedBCE:
    """Σ_s w_s · BCE(Υ(rows[owner_s], q_{items_s}), labels_s), the objective of every built-in strategy.

    Row ``r`` of ``rows`` (a user embedding or an approximated one) belongs to batch client ``client_of_row[r]``.
    """

    rows: torch.Tensor  # [R, d]
    owner: torch.Tensor  # int64 [S], row of each sample
    items: torch.Tensor  # int64 [S]
    labels: torch.Tensor  # [S]
    weights: torch.Tensor  # [S]
    client_of_row: torch.Tensor  # int64 [R]

    @classmethod
    def of_batch(cls, batch: LocalBatch, keep: torch.Tensor | None = None) -> WeightedBCE:
        """Each client's mean BCE over its own samples (or over the samples ``keep`` selects)."""
        owner, items, labels = batch.owner, batch.items, batch.labels
        counts = batch.counts
        if keep is not None:
            owner, items, labels = owner[keep], items[keep], labels[keep]
            counts = torch.bincount(owner, minlength=len(batch.client_ids)).to(labels.dtype)
        rows = torch.arange(len(batch.client_ids), device=owner.device)
        return cls(batch.embeddings, owner, items, labels, 1.0 / counts[owner], rows)

    def gradients(self, theta: Theta, num_linear: int) -> tuple[torch.Tensor, Theta, torch.Tensor]:
        """(loss, Σ ∇Θ, ∇rows) in one pass, see ``weighted_bce_grads``."""
        return weighted_bce_grads(theta, self.rows, self.owner, self.items, self.labels, self.weights, num_linear)

    def upload_norms(self, theta: Theta, num_linear: int, clients: np.ndarray) -> torch.Tensor:
        """‖∇Θ‖ of each listed client's own share of the objective (its upload)."""
        clients = torch.as_tensor(np.asarray(clients, dtype=np.int64), device=self.owner.device)
        if len(clients) == 0:
            return torch.zeros(0)
        position = torch.full((int(self.client_of_row.max()) + 1,), -1, dtype=torch.int64, device=self.owner.device)
        position[clients] = torch.arange(len(clients), device=self.owner.device)
        sample_client = position[self.client_of_row[self.owner]]
        keep = sample_client >= 0
        return per_client_grad_norms(theta, self.rows, self.owner[keep], self.items[keep], self.labels[keep],
                                     self.weights[keep], num_linear, sample_client[keep], len(clients)).cpu()


def measured_clients(num_clients: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Batch rows whose upload norm is logged: all (``limit`` None) or a uniform sample of at most ``limit``."""
    if limit is None or limit >= num_clients:
        return np.arange(num_clients)
    return np.sort(rng.choice(num_clients, size=limit, replace=False))


def bce_step(theta: Theta, batch: LocalBatch, ctx: StrategyContext, objective: WeightedBCE | None = None,
             measure_all: bool = False) -> ClientUpdate:
    """Every client's mean BCE over its own samples (L_u); one pass gives each ∇p_u (p_u appears
    only in L_u) and Σ_u ∇Θ_u; then p_u ← p_u − η ∇p_u (eq. 5). Logs the upload norms of a sample of
    ``config.upload_norm_sample`` clients (all of them with ``measure_all``)."""
    objective = objective or WeightedBCE.of_batch(batch)
    loss, grads, user_grad = objective.gradients(theta, ctx.spec.num_linear)
    limit = None if measure_all else ctx.config.upload_norm_sample
    norms = objective.upload_norms(theta, ctx.spec.num_linear,
                                   measured_clients(len(batch.client_ids), limit, ctx.diagnostics_rng))
    return ClientUpdate(grads, batch.embeddings - ctx.lr * user_grad, float(loss), len(batch.client_ids), norms)


class HonestStrategy(ClientStrategy):
    """A benign client: local NCF training with BCE on its own positives and sampled negatives."""

    name = "honest"

    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        return bce_step(theta, batch, ctx)


STRATEGIES: dict[str, type[ClientStrategy]] = {"honest": HonestStrategy}


def registered_strategies() -> dict[str, type[ClientStrategy]]:
    """Built-in strategies: honest plus the malicious ones of ``attacks.federated``."""
    from attacks.federated import MALICIOUS_STRATEGIES

    return {**STRATEGIES, **MALICIOUS_STRATEGIES}


def load_strategy_class(spec: str) -> type[ClientStrategy]:
    """Resolve a registry name, ``package.module:Class`` or ``path/to/file.py:Class``."""
    registry = registered_strategies()
    if spec in registry:
        return registry[spec]
    if ":" not in spec:
        raise ValueError(f"unknown client strategy {spec!r}: use one of {sorted(registry)}, "
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

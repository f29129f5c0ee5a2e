"""The client-strategy interface: how a batch of simulated clients computes its uploads.

A strategy receives Θ^t (exactly what the server sent), the selected clients' local state as
one batch, and returns every client's own upload ∇Θ_u (``federation.uploads.ClientUploads``) plus
the clients' new user embeddings. Honest clients train NCF with BCE (eqs. 4–5); attacks are
strategies too. Plug in your own with ``--client-strategy mypkg.mymod:MyStrategy`` or
``--client-strategy path/to/file.py:MyStrategy``, optionally for a subset of clients: ``...:MyStrategy@0-99,250``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from federation.plugins import load_class, strategy_registry
from federation.uploads import ClientUploads
from recsys.models.ncf import BlockedSamples, NCFSpec, PerClientGrads, Theta, blocked_bce_grads, per_client_bce_grads

if TYPE_CHECKING:
    from federation.config import SimulationConfig

CLIENT_DRAW_STREAM = 11  # random stream of a client's own draws in a round (attack sampling)


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know besides its own clients: the model shape, η, the target items, the run's
    settings (attack hyper-parameters, ``config.extra`` for plug-ins), the round and the seed."""

    spec: NCFSpec
    lr: float
    targets: torch.Tensor  # int64 item ids the experiment tracks (ER@K)
    round: int
    config: SimulationConfig

    def client_generator(self, client_id: int) -> torch.Generator:
        """A generator for one client's own random draws in this round, keyed by (seed, round, client):
        the draws never depend on which other clients share the batch or the shard."""
        seed = np.random.SeedSequence([self.config.seed, CLIENT_DRAW_STREAM, self.round, int(client_id)])
        return torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] & (2**63 - 1)))


@dataclass
class LocalBatch:
    """The selected clients of one strategy in one round, stacked.

    Sample ``s`` belongs to client ``owner[s]`` (a row of ``embeddings``); a client's samples are
    its positives (label 1) followed by its fixed negatives (label 0). The shard hands them over in
    per-client blocks (``samples``, weight 1 on real samples); ``items``, ``labels`` and ``owner`` are
    the real samples in order.
    """

    client_ids: np.ndarray  # global ids, int64 [B]
    embeddings: torch.Tensor  # p_u^t, [B, d]
    counts: torch.Tensor  # float [B], samples per client
    samples: BlockedSamples  # one row per client (row_per_block), weights 1 on real samples

    @cached_property
    def items(self) -> torch.Tensor:
        """int64 [S]: every real sample's item."""
        return self.samples.items[self.samples.valid]

    @cached_property
    def labels(self) -> torch.Tensor:
        """float [S]: 1 for a positive, 0 for a negative."""
        return self.samples.labels[self.samples.valid]

    @cached_property
    def owner(self) -> torch.Tensor:
        """int64 [S]: each real sample's client (index into the batch)."""
        return self.samples.owner[self.samples.valid]

    def mean_bce(self) -> BlockedSamples:
        """The samples weighted for each client's mean BCE over its own samples (weight 1 / its count)."""
        scale = (1.0 / self.counts).index_select(0, self.samples.block_client)  # the weight of each block's samples
        return replace(self.samples, weights=self.samples.blocks(self.samples.weights).mul(scale[:, None]).view(-1))


@dataclass
class ClientUpdate:
    """Every batch client's own upload ∇Θ_u (in batch order) and the clients' p_u^{t+1}."""

    uploads: ClientUploads
    embeddings: torch.Tensor


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
    blocked: BlockedSamples | None = None  # the same samples in per-client blocks, when known in advance

    @classmethod
    def of_batch(cls, batch: LocalBatch, keep: torch.Tensor | None = None) -> WeightedBCE:
        """Each client's mean BCE over its own samples (or over the samples ``keep`` selects)."""
        rows = torch.arange(len(batch.client_ids), device=batch.embeddings.device)
        if keep is not None:
            owner, items, labels = batch.owner[keep], batch.items[keep], batch.labels[keep]
            counts = torch.bincount(owner, minlength=len(batch.client_ids)).to(labels.dtype)
            return cls(batch.embeddings, owner, items, labels, 1.0 / counts[owner], rows)
        blocked = batch.mean_bce()
        return cls(batch.embeddings, batch.owner, batch.items, batch.labels, blocked.weights[blocked.valid], rows, blocked)

    def per_client(self, theta: Theta, num_linear: int, num_clients: int) -> PerClientGrads:
        """Each batch client's own loss and gradient, and ∂L/∂rows, in one pass (``per_client_bce_grads``)."""
        if self.blocked is not None:
            return blocked_bce_grads(theta, self.rows, self.blocked, num_linear, self.client_of_row, num_clients)
        return per_client_bce_grads(theta, self.rows, self.owner, self.items, self.labels, self.weights, num_linear,
                                    self.client_of_row, num_clients)


def client_uploads(batch: LocalBatch, grads: PerClientGrads) -> ClientUploads:
    """The batch clients' uploads from their per-client gradients."""
    return ClientUploads(batch.client_ids, grads.dense, grads.row_indptr, grads.row_items, grads.row_values,
                         grads.losses)


def bce_step(theta: Theta, batch: LocalBatch, ctx: StrategyContext, objective: WeightedBCE | None = None) -> ClientUpdate:
    """Every client's mean BCE over its own samples (L_u; ``objective`` replaces it); one pass gives each client's
    ∇Θ_u (its upload) and ∇p_u (p_u appears only in L_u); then p_u ← p_u − η ∇p_u (eq. 5)."""
    count = len(batch.client_ids)
    if objective is None:  # L_u straight from the shard's blocks (``WeightedBCE.of_batch(batch)``, without its copies)
        rows = torch.arange(count, device=batch.embeddings.device)
        grads = blocked_bce_grads(theta, batch.embeddings, batch.mean_bce(), ctx.spec.num_linear, rows, count)
    else:
        grads = objective.per_client(theta, ctx.spec.num_linear, count)
    return ClientUpdate(client_uploads(batch, grads), batch.embeddings - ctx.lr * grads.row_grad)


class HonestStrategy(ClientStrategy):
    """A benign client: local NCF training with BCE on its own positives and sampled negatives."""

    name = "honest"

    def train(self, theta: Theta, batch: LocalBatch, ctx: StrategyContext) -> ClientUpdate:
        return bce_step(theta, batch, ctx)


def load_strategy_class(spec: str) -> type[ClientStrategy]:
    """Resolve a registered name (``federation.plugins``), ``package.module:Class`` or ``path/to/file.py:Class``."""
    return load_class(spec, strategy_registry(), "client strategy", ClientStrategy)

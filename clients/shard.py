"""A shard: many simulated clients hosted by one supernode, computed as one batch per round."""

from __future__ import annotations

import logging

import numpy as np
import torch

from clients.local_data import LocalData
from clients.strategy import ClientStrategy, LocalBatch, StrategyContext, load_strategy_class
from federation.config import SimulationConfig
from federation.uploads import ClientUploads
from recsys.data.dataset import Interactions
from recsys.metrics import RankingSums, rank_metrics
from recsys.models.ncf import ScoreBuffers, Theta, TouchedRows, score_all_items

log = logging.getLogger("fedrec.clients")

EVAL_CHUNK_CELLS = 400_000  # users x items scored at once during evaluation (cache-sized)
COMPILED_EVAL_CELLS = 10_000_000  # users x items of a shard's evaluation from which the compiled scorer (compiled
# once per process, 5-30 s) is used on CPU


def interleave_rows(first: Interactions, second: Interactions) -> tuple[Interactions, np.ndarray]:
    """Per row, ``first``'s items then ``second``'s; also a mask of entries that came from ``first``."""
    indptr = first.indptr + second.indptr
    items = np.empty(indptr[-1], dtype=np.int64)
    from_first = np.zeros(indptr[-1], dtype=bool)
    first_pos = np.arange(first.nnz) + np.repeat(indptr[:-1] - first.indptr[:-1], first.lengths())
    second_pos = np.arange(second.nnz) + np.repeat(indptr[:-1] + first.lengths() - second.indptr[:-1], second.lengths())
    items[first_pos], items[second_pos] = first.items, second.items
    from_first[first_pos] = True
    return Interactions(indptr, items), from_first


class Shard:
    """Local state and batched computation of a contiguous range of clients."""

    def __init__(
        self,
        data: LocalData,
        config: SimulationConfig,
        num_items: int,
        strategy_specs: list[str],
        strategy_index: np.ndarray,
        device: torch.device,
    ) -> None:
        self.data, self.config, self.device = data, config, device
        self.spec, self.lr, self.seed = config.model_spec(num_items), config.lr, config.seed
        self.samples, positive = interleave_rows(data.train, data.negatives)
        self.labels = positive.astype(np.float32)
        touched = TouchedRows.of_samples(torch.from_numpy(self.samples.row_ids()), torch.from_numpy(self.samples.items),
                                         len(data.users), num_items)  # fixed for the run: sorted once
        self.touched = Interactions(touched.indptr.numpy(), touched.items.numpy())
        self.sample_row = touched.sample_row.numpy()
        self.embeddings = torch.from_numpy(data.embeddings).to(device)
        self.strategies: list[ClientStrategy] = [load_strategy_class(s)() for s in strategy_specs]
        self.strategy_index = strategy_index  # per local client
        benign = np.array([s.benign for s in self.strategies])
        self.evaluated = np.flatnonzero(benign[strategy_index])  # local indices of benign clients
        self.score_buffers = ScoreBuffers()

    @property
    def first_client(self) -> int:
        return int(self.data.users[0]) if len(self.data.users) else 0

    def local_index(self, client_ids: np.ndarray) -> np.ndarray:
        local = np.asarray(client_ids, dtype=np.int64) - self.first_client
        if local.size and (local.min() < 0 or local.max() >= len(self.data.users)):
            raise ValueError(f"clients {client_ids} are not hosted by this shard")
        return local

    def batch(self, local: np.ndarray) -> LocalBatch:
        rows = self.samples.subset(local)
        starts = np.repeat(self.samples.indptr[local] - rows.indptr[:-1], rows.lengths())
        labels = self.labels[np.arange(rows.nnz) + starts]
        to = lambda array: torch.from_numpy(array).to(self.device)  # noqa: E731
        touched = self.touched.subset(local)
        owner = rows.row_ids()
        shift = (touched.indptr[:-1] - self.touched.indptr[local])[owner]
        sample_row = self.sample_row[np.arange(rows.nnz) + starts] + shift
        return LocalBatch(
            client_ids=self.data.users[local],
            embeddings=self.embeddings[to(local)],
            items=to(rows.items),
            labels=to(labels).to(self.embeddings.dtype),
            owner=to(owner),
            counts=to(rows.lengths()).to(self.embeddings.dtype),
            touched=TouchedRows(to(touched.indptr), to(touched.items), to(sample_row)),
        )

    def train_round(self, theta: Theta, client_ids: np.ndarray, round_index: int, targets: torch.Tensor) -> ClientUploads:
        """Run every selected client's local step (one batch per strategy); return their uploads (grouped
        by strategy) and keep their new embeddings. A strategy that raises or returns uploads that cannot
        travel loses its own clients' uploads this round (the server counts them as missing); the shard's
        other clients are unaffected."""
        local = self.local_index(client_ids)
        ctx = StrategyContext(self.spec, self.lr, targets, round_index, self.config)
        parts = []
        for index, strategy in enumerate(self.strategies):
            chosen = np.flatnonzero(self.strategy_index[local] == index)
            if len(chosen) == 0:
                continue
            try:
                update = strategy.train(theta, self.batch(local[chosen]), ctx)
                problem = update.uploads.layout_problem(self.spec, self.embeddings.dtype)
                if problem is None and not np.array_equal(update.uploads.client_ids, self.data.users[local[chosen]]):
                    problem = "uploads are not for the batch's clients in batch order"
                if problem is None and tuple(update.embeddings.shape) != (len(chosen), self.spec.dim):
                    problem = f"embeddings of shape {tuple(update.embeddings.shape)}, expected {(len(chosen), self.spec.dim)}"
            except Exception as error:  # noqa: BLE001 - a client's own code failing must not take the shard down
                problem = f"{type(error).__name__}: {error}"
            if problem is not None:
                log.warning("round %d: strategy %r produced no upload for %d clients: %s", round_index, strategy.name,
                            len(chosen), problem)
                continue
            self.embeddings[torch.from_numpy(local[chosen]).to(self.device)] = update.embeddings
            parts.append(update.uploads)
        return ClientUploads.concat(parts) if parts else ClientUploads.empty(self.spec, self.embeddings.dtype, self.device)

    @torch.no_grad()
    def evaluate(self, theta: Theta, targets: torch.Tensor, k: int, er_ks: tuple[int, ...]) -> RankingSums:
        """Metric sums over this shard's benign clients, scored in chunks of users."""
        sums = RankingSums.zeros(len(er_ks), len(targets))
        chunk = max(1, EVAL_CHUNK_CELLS // max(1, self.spec.num_items))
        compiled = self.device.type == "cpu" and len(self.evaluated) * self.spec.num_items >= COMPILED_EVAL_CELLS
        for start in range(0, len(self.evaluated), chunk):
            rows = self.evaluated[start : start + chunk]
            scores = score_all_items(self.embeddings[torch.from_numpy(rows).to(self.device)], theta, self.spec.num_linear,
                                    self.score_buffers, compiled)
            sums = sums + rank_metrics(scores, self.data.train.subset(rows), self.data.test.subset(rows), targets, k, er_ks)
        return sums

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
from recsys.metrics import RankingSums, ncf_rank_metrics
from recsys.models.ncf import CHUNK, BlockedSamples, ScoreBuffers, Theta, TouchedRows

log = logging.getLogger("fedrec.clients")

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
        samples, positive = interleave_rows(data.train, data.negatives)
        self.counts = samples.lengths()
        touched = TouchedRows.of_samples(torch.from_numpy(samples.row_ids()), torch.from_numpy(samples.items),
                                         len(data.users), num_items)  # fixed for the run: sorted once
        self.touched = Interactions(touched.indptr.numpy(), touched.items.numpy())
        # every client's samples in blocks of CHUNK, laid out once (padding: item 0, the client's row 0, not valid)
        self.block_count = -(-self.counts // CHUNK)
        self.block_start = np.cumsum(self.block_count) - self.block_count
        position = np.arange(samples.nnz) + np.repeat(self.block_start * CHUNK - samples.indptr[:-1], self.counts)
        local_row = touched.sample_row.numpy() - self.touched.indptr[samples.row_ids()]  # within the client's rows
        self.block_items, self.block_positive, self.block_row, self.block_valid = (
            self._in_blocks(position, values) for values in (samples.items, positive, local_row, np.ones(samples.nnz, bool)))
        self.embeddings = torch.from_numpy(data.embeddings).to(device)
        self.strategies: list[ClientStrategy] = [load_strategy_class(s)() for s in strategy_specs]
        self.strategy_index = strategy_index  # per local client
        benign = np.array([s.benign for s in self.strategies])
        self.evaluated = np.flatnonzero(benign[strategy_index])  # local indices of benign clients
        self.score_buffers = ScoreBuffers()

    def _in_blocks(self, position: np.ndarray, values: np.ndarray) -> torch.Tensor:
        """Per-sample ``values`` at ``position`` of the block layout, zeros in the padding; ``[blocks, CHUNK]``."""
        out = np.zeros(int(self.block_count.sum()) * CHUNK, values.dtype)
        out[position] = values
        return torch.from_numpy(out.reshape(-1, CHUNK)).to(self.device)

    @property
    def first_client(self) -> int:
        return int(self.data.users[0]) if len(self.data.users) else 0

    def local_index(self, client_ids: np.ndarray) -> np.ndarray:
        local = np.asarray(client_ids, dtype=np.int64) - self.first_client
        if local.size and (local.min() < 0 or local.max() >= len(self.data.users)):
            raise ValueError(f"clients {client_ids} are not hosted by this shard")
        return local

    def batch(self, local: np.ndarray) -> LocalBatch:
        """The clients at local positions ``local``, in that order, their samples in per-client blocks."""
        count = self.block_count[local]
        blocks = np.arange(count.sum()) + np.repeat(self.block_start[local] - (np.cumsum(count) - count), count)
        touched = self.touched.subset(local)
        to = lambda array: torch.from_numpy(array).to(self.device)  # noqa: E731
        index, block_client = to(blocks), to(np.repeat(np.arange(len(local)), count))
        gather = lambda table: table.index_select(0, index)  # noqa: E731
        dtype = self.embeddings.dtype
        sample_row = gather(self.block_row).add_(to(touched.indptr[:-1]).index_select(0, block_client)[:, None])
        valid = gather(self.block_valid).view(-1)
        samples = BlockedSamples(block_client.repeat_interleave(CHUNK), gather(self.block_items).view(-1),
                                 gather(self.block_positive).view(-1).to(dtype), valid.to(dtype), valid,
                                 sample_row.view(-1), block_client, to(touched.indptr), to(touched.items), row_per_block=True)
        return LocalBatch(self.data.users[local], self.embeddings[to(local)], to(self.counts[local]).to(dtype), samples)

    def train_round(self, theta: Theta, client_ids: np.ndarray, round_index: int, targets: torch.Tensor) -> ClientUploads:
        """Run every selected client's local step (one batch per strategy); return their uploads (grouped
        by strategy, each group in client-id order) and keep their new embeddings. A strategy that raises or returns uploads that cannot
        travel loses its own clients' uploads this round (the server counts them as missing); the shard's
        other clients are unaffected."""
        local = np.sort(self.local_index(client_ids))
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
        rows = self.evaluated
        compiled = self.device.type == "cpu" and len(rows) * self.spec.num_items >= COMPILED_EVAL_CELLS
        return ncf_rank_metrics(self.embeddings[torch.from_numpy(rows).to(self.device)], theta, self.spec.num_linear,
                                self.data.train.subset(rows), self.data.test.subset(rows), targets, k, er_ks,
                                self.score_buffers, compiled)

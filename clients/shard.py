"""A shard: many simulated clients hosted by one supernode, computed as one batch per round."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clients.local_data import LocalData
from clients.strategy import ClientStrategy, ClientUpdate, LocalBatch, StrategyContext, load_strategy_class
from federation.config import SimulationConfig
from recsys.data.dataset import Interactions
from recsys.metrics import RankingSums, rank_metrics
from recsys.models.ncf import ScoreBuffers, Theta, score_all_items

EVAL_CHUNK_CELLS = 400_000  # users x items scored at once during evaluation (cache-sized)
DIAGNOSTICS_STREAM = 7  # random stream choosing the clients whose upload norms are measured


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


@dataclass
class RoundResult:
    """A shard's summed upload of one round and the upload norms it measured, benign and malicious."""

    update: ClientUpdate
    benign_norms: torch.Tensor
    malicious_norms: torch.Tensor


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
        return LocalBatch(
            client_ids=self.data.users[local],
            embeddings=self.embeddings[to(local)],
            items=to(rows.items),
            labels=to(labels).to(self.embeddings.dtype),
            owner=to(rows.row_ids()),
            counts=to(rows.lengths()).to(self.embeddings.dtype),
        )

    def train_round(self, theta: Theta, client_ids: np.ndarray, round_index: int, targets: torch.Tensor) -> RoundResult:
        """Run every selected client's local step (grouped by strategy); return the summed upload."""
        local = self.local_index(client_ids)
        grads = {name: torch.zeros_like(value) for name, value in theta.items()}
        loss_sum, num_clients = 0.0, 0
        norms: dict[bool, list[torch.Tensor]] = {True: [], False: []}
        generator = torch.Generator().manual_seed(hash((self.seed, round_index, self.first_client)) & (2**63 - 1))
        diagnostics = np.random.default_rng([self.seed, round_index, self.first_client, DIAGNOSTICS_STREAM])
        ctx = StrategyContext(self.spec, self.lr, targets, round_index, generator, self.config, diagnostics)
        for index, strategy in enumerate(self.strategies):
            chosen = local[self.strategy_index[local] == index]
            if len(chosen) == 0:
                continue
            update = strategy.train(theta, self.batch(chosen), ctx)
            for name in grads:
                grads[name] += update.grads[name]
            self.embeddings[torch.from_numpy(chosen).to(self.device)] = update.embeddings
            loss_sum += update.loss_sum
            num_clients += update.num_clients
            norms[strategy.benign].append(update.upload_norms.reshape(-1).cpu())
        joined = {benign: torch.cat(parts) if parts else torch.zeros(0) for benign, parts in norms.items()}
        return RoundResult(ClientUpdate(grads, self.embeddings, loss_sum, num_clients), joined[True], joined[False])

    @torch.no_grad()
    def evaluate(self, theta: Theta, targets: torch.Tensor, k: int, er_ks: tuple[int, ...]) -> RankingSums:
        """Metric sums over this shard's benign clients, scored in chunks of users."""
        sums = RankingSums.zeros(len(er_ks), len(targets))
        chunk = max(1, EVAL_CHUNK_CELLS // max(1, self.spec.num_items))
        for start in range(0, len(self.evaluated), chunk):
            rows = self.evaluated[start : start + chunk]
            scores = score_all_items(self.embeddings[torch.from_numpy(rows).to(self.device)], theta, self.spec.num_linear,
                                    self.score_buffers)
            sums = sums + rank_metrics(scores, self.data.train.subset(rows), self.data.test.subset(rows), targets, k, er_ks)
        return sums

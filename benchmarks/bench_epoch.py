"""Time one training epoch and one full evaluation on the ML-1M fed split (6,040 users, 256 per
round): through the real Flower path (ServerApp + ClientApp), and the same math as the paper's
plain per-client Python loop (one client object per user). Prints both and their ratio.

    python benchmarks/bench_epoch.py --data-dir ../shared/datasets [--backend inprocess|ray] [--shards 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.local_data import build_local_data  # noqa: E402
from clients.shard import Shard  # noqa: E402
from federation.config import SimulationConfig, usable_cores  # noqa: E402
from federation.plan import dataset_for, make_plan  # noqa: E402
from harness.runner import run  # noqa: E402
from recsys.models.ncf import ITEM_EMBEDDING, init_theta, ncf_logits, score_all_items  # noqa: E402
from server.aggregation import apply_update  # noqa: E402
from server.loop import epoch_rounds  # noqa: E402


class PaperClient:
    """One user, as in the paper's code: its own items, negatives and embedding; autograd per user."""

    def __init__(self, items: np.ndarray, labels: np.ndarray, embedding: np.ndarray, train: np.ndarray, test: np.ndarray):
        self.items, self.labels = torch.from_numpy(items), torch.from_numpy(labels)
        self.embedding = torch.from_numpy(embedding.copy())
        self.train_items, self.test_items = torch.from_numpy(train), set(test.tolist())

    def train(self, theta, lr, num_linear):
        leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
        p = self.embedding.clone().requires_grad_(True)
        logits = ncf_logits(p.expand(len(self.items), -1), leaves[ITEM_EMBEDDING][self.items], leaves, num_linear)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, self.labels)
        loss.backward()
        self.embedding = (p - lr * p.grad).detach()
        return {k: v.grad for k, v in leaves.items()}

    @torch.no_grad()
    def hr(self, theta, num_linear, k=20):
        scores = score_all_items(self.embedding[None], theta, num_linear)[0]
        scores[self.train_items] = -torch.inf
        top = scores.topk(k).indices.tolist()
        return sum(i in self.test_items for i in top) / max(1, len(self.test_items))


def per_client_loop(config: SimulationConfig) -> tuple[float, float]:
    dataset = dataset_for(config)
    data = build_local_data(dataset, np.arange(dataset.num_users), config.dim, config.negatives, config.seed)
    clients = []
    for u in range(dataset.num_users):
        pos, neg = data.train.user(u), data.negatives.user(u)
        labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
        clients.append(PaperClient(np.concatenate([pos, neg]), labels, data.embeddings[u], pos, data.test.user(u)))
    spec = config.model_spec(dataset.num_items)
    theta = init_theta(spec, torch.Generator().manual_seed(config.seed))
    order = np.random.default_rng(0).permutation(len(clients))
    start = time.perf_counter()
    for r in range(0, len(order), config.clients_per_round):
        total = {k: torch.zeros_like(v) for k, v in theta.items()}
        for u in order[r : r + config.clients_per_round]:
            for k, g in clients[u].train(theta, config.lr, spec.num_linear).items():
                total[k] += g
        for k in theta:
            theta[k] -= config.lr * total[k]
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    np.mean([c.hr(theta, spec.num_linear) for c in clients if c.test_items])
    return epoch, time.perf_counter() - start


def batched_without_flower(config: SimulationConfig) -> tuple[float, float]:
    """The same math as one batched shard holding every user, called directly (no messages)."""
    dataset = dataset_for(config)
    data = build_local_data(dataset, np.arange(dataset.num_users), config.dim, config.negatives, config.seed)
    spec = config.model_spec(dataset.num_items)
    shard = Shard(data, config, dataset.num_items, ["honest"], np.zeros(dataset.num_users, np.int64), torch.device("cpu"))
    theta = init_theta(spec, torch.Generator().manual_seed(config.seed))
    targets = torch.tensor(make_plan(config, dataset).targets)
    shard.evaluate(theta, targets, config.top_k, config.er_ks)  # warm-up
    start = time.perf_counter()
    for clients in epoch_rounds(dataset.num_users, config.clients_per_round, np.random.default_rng(0)):
        apply_update(theta, shard.train_round(theta, clients, 0, targets).update.grads, config.lr)
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    shard.evaluate(theta, targets, config.top_k, config.er_ks)
    return epoch, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="fed-ml")
    parser.add_argument("--backend", default="inprocess", choices=("inprocess", "ray"))
    parser.add_argument("--shards", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3, help="Flower-path epochs (median is reported)")
    args = parser.parse_args()
    config = SimulationConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, backend=args.backend,
                              num_shards=args.shards, out="runs/bench", checkpoint_every=0)
    print(f"{os.cpu_count()} cores visible, {usable_cores()} usable; torch {torch.__version__}")
    print(dataset_for(config).describe())
    shards = make_plan(config, dataset_for(config)).num_shards
    history = run(config, echo=False)
    flower_epoch = float(np.median([row["seconds"] for row in history[1:]]))
    flower_eval = float(np.median([row["eval_seconds"] for row in history[1:]]))
    torch.set_num_threads(usable_cores())
    batched_epoch, batched_eval = batched_without_flower(config)
    torch.set_num_threads(1)  # tiny per-user ops: more threads only add overhead
    loop_epoch, loop_eval = per_client_loop(config)
    print(f"\n{'':28}{'epoch (s)':>12}{'evaluation (s)':>16}")
    print(f"{'per-client loop (paper)':28}{loop_epoch:>12.3f}{loop_eval:>16.3f}")
    print(f"{'batched, no Flower':28}{batched_epoch:>12.3f}{batched_eval:>16.3f}")
    print(f"{f'Flower {args.backend}, {shards} shard(s)':28}{flower_epoch:>12.3f}{flower_eval:>16.3f}")
    print(f"{'speed-up':28}{loop_epoch / flower_epoch:>11.1f}x{loop_eval / flower_eval:>15.1f}x")


if __name__ == "__main__":
    main()

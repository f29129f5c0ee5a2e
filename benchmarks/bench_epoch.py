"""Time one training epoch and one full evaluation on the ML-1M fed split (6,040 users, 256 per
round), all in one run:

- the paper's plain per-client Python loop (one client object per user, autograd per user);
- the old shard-sum computation (the reference: one summed gradient per shard and round, no per-client uploads);
- per-client uploads, batched, then each aggregation rule of ``--rules`` (without Flower's messages);
- the same under ``sum`` with A-hum's malicious clients injected at rho = 0.5 % (30 attackers);
- the real Flower path (ServerApp + ClientApp) with ``--flower-rules`` (default: sum).

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
from clients.population import build_client_data  # noqa: E402
from clients.shard import Shard  # noqa: E402
from clients.strategy import WeightedBCE  # noqa: E402
from federation.assignments import assign_strategies, strategy_specs  # noqa: E402
from federation.config import SimulationConfig, usable_cores  # noqa: E402
from federation.plan import dataset_for, make_plan  # noqa: E402
from federation.plugins import AGGREGATION_RULES  # noqa: E402
from harness.runner import run  # noqa: E402
from recsys.models.ncf import ITEM_EMBEDDING, init_theta, ncf_logits, score_all_items, weighted_bce_grads  # noqa: E402
from server.aggregation import RoundInfo, apply_update, load_rule  # noqa: E402
from server.loop import epoch_rounds  # noqa: E402


ATTACK_ROW = "per-client + sum, A-hum rho 0.5 %"


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
    start = time.process_time()
    for r in range(0, len(order), config.clients_per_round):
        total = {k: torch.zeros_like(v) for k, v in theta.items()}
        for u in order[r : r + config.clients_per_round]:
            for k, g in clients[u].train(theta, config.lr, spec.num_linear).items():
                total[k] += g
        for k in theta:
            theta[k] -= config.lr * total[k]
    epoch = time.process_time() - start
    start = time.process_time()
    np.mean([c.hr(theta, spec.num_linear) for c in clients if c.test_items])
    return epoch, time.process_time() - start


def direct_shard(config: SimulationConfig) -> tuple[Shard, torch.Tensor, np.ndarray]:
    """One shard holding every client of ``config``'s federation (injected attackers included), its targets and
    each client's ground-truth malicious flag."""
    dataset = dataset_for(config)
    plan = make_plan(config, dataset)
    clients = np.arange(plan.num_clients)
    data = build_client_data(config, plan, dataset, clients)
    shard = Shard(data, config, dataset.num_items, strategy_specs(plan.assignments),
                  assign_strategies(plan.assignments, plan.num_clients), torch.device("cpu"))
    malicious = np.zeros(plan.num_clients, bool)
    malicious[list(plan.malicious_ids)] = True
    return shard, torch.tensor(plan.targets), malicious


def rule_epoch(config: SimulationConfig, shard: Shard, targets: torch.Tensor,
               malicious: np.ndarray) -> tuple[float, float, float]:
    """CPU seconds of one epoch of per-client uploads aggregated by ``config.aggregation`` and of the rule alone,
    and the epoch's wall seconds."""
    spec = config.model_spec(shard.spec.num_items)
    theta = init_theta(spec, torch.Generator().manual_seed(config.seed))
    rule = load_rule(config, spec)
    rule_seconds, start, wall = 0.0, time.process_time(), time.perf_counter()
    for r, clients in enumerate(epoch_rounds(len(malicious), config.clients_per_round, np.random.default_rng(0))):
        uploads = shard.train_round(theta, clients, r, targets).sorted_by_client()
        begin = time.process_time()
        step = rule.aggregate(uploads, RoundInfo(r, targets, malicious[uploads.client_ids])).step
        rule_seconds += time.process_time() - begin
        apply_update(theta, step, config.lr)
    return time.process_time() - start, rule_seconds, time.perf_counter() - wall


def batched_without_flower(config: SimulationConfig, rules: list[str], attack: SimulationConfig) -> dict[str, float]:
    """CPU seconds (``time.process_time``, this process's torch threads) per epoch of the old shard-sum step, of
    per-client uploads plus each rule, of ``attack``'s federation under ``sum``, and of one evaluation: one batched
    shard holding every client, called directly (no messages). CPU time, unlike wall time, stays comparable when
    other jobs share the cores."""
    shard, targets, malicious = direct_shard(config)
    spec = config.model_spec(shard.spec.num_items)
    rounds = epoch_rounds(len(malicious), config.clients_per_round, np.random.default_rng(0))
    initial = shard.embeddings.clone()
    times: dict[str, float] = {}

    theta = init_theta(spec, torch.Generator().manual_seed(config.seed))
    start = time.process_time()
    for clients in rounds:  # the old path: one summed gradient per round, p_u updated from the same pass
        batch = shard.batch(shard.local_index(clients))
        objective = WeightedBCE.of_batch(batch)
        _, grads, user_grad = weighted_bce_grads(theta, objective.rows, objective.owner, objective.items,
                                                 objective.labels, objective.weights, spec.num_linear)
        shard.embeddings[torch.from_numpy(clients)] = batch.embeddings - config.lr * user_grad
        apply_update(theta, grads, config.lr)
    times["shard sum (old path)"] = time.process_time() - start

    for rule_name in rules:
        shard.embeddings = initial.clone()
        rule_config = SimulationConfig(**{**config.to_dict(), "aggregation": rule_name})
        times[f"per-client + {rule_name}"], times[f"  of which {rule_name} itself"], wall = rule_epoch(
            rule_config, shard, targets, malicious)
        if rule_name == "sum" and torch.get_num_threads() > 1:
            times[f"  wall s, {torch.get_num_threads()} threads"] = wall
    attacked = direct_shard(attack)
    times[ATTACK_ROW] = rule_epoch(attack, *attacked)[0]
    shard.embeddings = initial.clone()
    theta = init_theta(spec, torch.Generator().manual_seed(config.seed))
    shard.evaluate(theta, targets, config.top_k, config.er_ks)  # warm-up
    start = time.process_time()
    shard.evaluate(theta, targets, config.top_k, config.er_ks)
    times["evaluation"] = time.process_time() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="fed-ml")
    parser.add_argument("--backend", default="inprocess", choices=("inprocess", "ray"))
    parser.add_argument("--shards", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3, help="Flower-path epochs (median is reported)")
    parser.add_argument("--rules", default="sum,median,trimmed-mean,krum,multi-krum,bulyan",
                        help="aggregation rules timed without Flower (comma-separated)")
    parser.add_argument("--flower-rules", default="sum", help="aggregation rules run through Flower")
    parser.add_argument("--skip-loop", action="store_true", help="skip the per-client Python loop (slow)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the direct (no-Flower) timings")
    args = parser.parse_args()
    rules = [r for r in args.rules.split(",") if r]
    unknown = [r for r in rules + args.flower_rules.split(",") if r not in AGGREGATION_RULES]
    if unknown:
        parser.error(f"unknown rules {unknown}; known: {', '.join(AGGREGATION_RULES)}")
    config = SimulationConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, backend=args.backend,
                              num_shards=args.shards, out="runs/bench", checkpoint_every=0, overwrite=True)
    print(f"{os.cpu_count()} cores visible, {usable_cores()} usable; torch {torch.__version__}")
    print(dataset_for(config).describe())
    shards = make_plan(config, dataset_for(config)).num_shards
    flower = {}
    for rule in args.flower_rules.split(","):
        history = run(SimulationConfig(**{**config.to_dict(), "aggregation": rule}), echo=False)
        flower[f"Flower {args.backend}, {shards} shard(s), {rule}"] = (
            float(np.median([row["seconds"] for row in history[1:]])),
            float(np.median([row["eval_seconds"] for row in history[1:]])))
    torch.set_num_threads(args.threads)
    attack = SimulationConfig(**{**config.to_dict(), "attack": "a-hum", "malicious_frac": 0.005})
    direct = batched_without_flower(config, rules, attack)
    rows = {name: (seconds, None) for name, seconds in direct.items() if name != "evaluation"}
    rows["batched evaluation"] = (None, direct["evaluation"])
    if not args.skip_loop:
        torch.set_num_threads(1)  # tiny per-user ops: more threads only add overhead
        rows = {"per-client loop (paper)": per_client_loop(config), **rows}
    rows.update(flower)
    fmt = lambda v: f"{v:>12.3f}" if v is not None else f"{'':>12}"  # noqa: E731
    print(f"\nFlower rows: wall seconds; direct rows: CPU seconds on {args.threads} thread(s); paper loop: CPU, 1 thread")
    print(f"\n{'':40}{'epoch (s)':>12}{'evaluation (s)':>16}")
    for name, (epoch, evaluation) in rows.items():
        print(f"{name:40}{fmt(epoch)}{fmt(evaluation):>16}")
    reference = direct["shard sum (old path)"]
    print("\nratios to the old shard-sum epoch (same run):")
    for name, seconds in direct.items():
        if name.startswith("per-client"):
            print(f"  {name:36}{seconds / reference:>8.2f}x")
    if "per-client + sum" in direct:
        for rule in rules:
            if rule != "sum":
                print(f"  {rule} epoch / sum epoch{'':14}{direct[f'per-client + {rule}'] / direct['per-client + sum']:>8.2f}x")
    if not args.skip_loop:
        loop_epoch, loop_eval = rows["per-client loop (paper)"]
        print(f"  paper loop / per-client + sum epoch (CPU time): {loop_epoch / direct['per-client + sum']:.1f}x; "
              f"/ A-hum rho 0.5 % epoch: {loop_epoch / direct[ATTACK_ROW]:.1f}x; "
              f"evaluation: {loop_eval / direct['evaluation']:.1f}x")
        wall_row = f"  wall s, {args.threads} threads"
        if wall_row in direct:
            print(f"  paper loop (CPU, 1 thread) / per-client + sum epoch (wall, {args.threads} threads): "
                  f"{loop_epoch / direct[wall_row]:.1f}x")


if __name__ == "__main__":
    main()

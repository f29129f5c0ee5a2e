"""Time one full evaluation (HR/precision/NDCG@K and ER@K of every benign user) with the tiled scorer
against the previous scorer (the reference, kept here), in one run, and check that both give exactly
the same metric sums.

    python benchmarks/bench_eval.py --data-dir ../shared/datasets --dataset fed-ml [--repeats 5] [--threads 1]

Times are CPU seconds (``time.process_time``) of this process, the variants interleaved; min and median.
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

from clients.shard import EVAL_CHUNK_CELLS  # noqa: E402
from federation.config import SimulationConfig  # noqa: E402
from federation.plan import dataset_for, make_plan  # noqa: E402
from recsys.data.dataset import Dataset  # noqa: E402
from recsys.metrics import RankingSums, rank_metrics  # noqa: E402
from recsys.models.ncf import (ITEM_EMBEDDING, ScoreBuffers, Theta, init_theta, init_user_embeddings,  # noqa: E402
                               score_all_items)

@torch.no_grad()
def reference_scores(user_emb: torch.Tensor, theta: Theta, num_linear: int, buffers: ScoreBuffers) -> torch.Tensor:
    """The previous scorer: first layer split, then every layer in place on the whole ``[U, M, h]`` activations."""
    weight, bias = theta["mlp.0.weight"], theta["mlp.0.bias"]
    num_users, dim = user_emb.shape
    user_part = torch.addmm(bias, user_emb, weight[:, :dim].T)
    item_part = theta[ITEM_EMBEDDING] @ weight[:, dim:].T
    hidden = buffers.get(0, (num_users, item_part.shape[0], weight.shape[0]), user_emb)
    torch.add(user_part[:, None, :], item_part[None, :, :], out=hidden).relu_()
    for k in range(1, num_linear):
        weight, bias = theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"]
        flat = hidden.view(-1, hidden.shape[-1])
        out = buffers.get(k, (flat.shape[0], weight.shape[0]), user_emb)
        torch.matmul(flat, weight.T, out=out).add_(bias)
        if k < num_linear - 1:
            out.relu_()
        hidden = out.view(num_users, item_part.shape[0], -1)
    return hidden.squeeze(-1)


def evaluate(dataset: Dataset, user_emb: torch.Tensor, theta: Theta, num_linear: int, targets: torch.Tensor, k: int,
             er_ks: tuple[int, ...], reference: bool = False, buffers: ScoreBuffers | None = None) -> RankingSums:
    """Metric sums over all users, scored in chunks of users as a shard does (``reference``: the previous scorer)."""
    chunk = max(1, EVAL_CHUNK_CELLS // dataset.num_items)
    buffers = buffers or ScoreBuffers()
    sums = RankingSums.zeros(len(er_ks), len(targets))
    for start in range(0, dataset.num_users, chunk):
        rows = np.arange(start, min(start + chunk, dataset.num_users))
        scores = (reference_scores(user_emb[rows], theta, num_linear, buffers) if reference
                  else score_all_items(user_emb[rows], theta, num_linear, buffers))
        sums = sums + rank_metrics(scores, dataset.train.subset(rows), dataset.test.subset(rows), targets, k, er_ks)
    return sums


def spread_model(num_users: int, num_items: int, config: SimulationConfig, seed: int) -> tuple[torch.Tensor, Theta]:
    """User embeddings and Θ with scores spread out like a trained model's (initial values, scaled up)."""
    spec = config.model_spec(num_items)
    theta = init_theta(spec, torch.Generator().manual_seed(seed))
    theta[ITEM_EMBEDDING] *= 30
    return init_user_embeddings(num_users, spec.dim, torch.Generator().manual_seed(seed + 1)) * 30, theta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="fed-ml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SimulationConfig(dataset=args.dataset, data_dir=args.data_dir)
    dataset = dataset_for(config)
    print(f"{os.cpu_count()} cores visible, {args.threads} torch thread(s); load average {os.getloadavg()[0]:.1f}")
    print(dataset.describe())
    user_emb, theta = spread_model(dataset.num_users, dataset.num_items, config, config.seed)
    targets = torch.tensor(make_plan(config, dataset).targets)
    spec, buffers, reference_buffers = config.model_spec(dataset.num_items), ScoreBuffers(), ScoreBuffers()
    run = {"reference": lambda: evaluate(dataset, user_emb, theta, spec.num_linear, targets, config.top_k,
                                         config.er_ks, reference=True, buffers=reference_buffers),
           "tiled": lambda: evaluate(dataset, user_emb, theta, spec.num_linear, targets, config.top_k, config.er_ks,
                                     buffers=buffers)}
    seconds: dict[str, list[float]] = {name: [] for name in run}
    results = {}
    for _ in range(args.repeats):
        for name, evaluation in run.items():
            start = time.process_time()
            results[name] = evaluation()
            seconds[name].append(time.process_time() - start)
    same = all(np.array_equal(np.asarray(getattr(results["reference"], f)), np.asarray(getattr(results["tiled"], f)))
               for f in ("test_users", "hr", "precision", "ndcg", "target_hits", "target_eligible"))
    print(f"\n{'':12}{'min (s)':>10}{'median (s)':>12}")
    for name, values in seconds.items():
        print(f"{name:12}{min(values):>10.3f}{np.median(values):>12.3f}")
    print(f"reference / tiled: {min(seconds['reference']) / min(seconds['tiled']):.2f}x (min), "
          f"{np.median(seconds['reference']) / np.median(seconds['tiled']):.2f}x (median); "
          f"metric sums identical: {same}")
    print(results["tiled"].finalize(config.top_k, config.er_ks))


if __name__ == "__main__":
    main()

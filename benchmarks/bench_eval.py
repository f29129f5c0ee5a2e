"""Time one full evaluation (HR/precision/NDCG@K and ER@K of every user) with ``score_all_items`` (eager
tiles, and compiled) and ``rank_metrics`` against the previous scorer and metrics (the reference, kept here),
in one run, and check that all give exactly the same metric sums.

    python benchmarks/bench_eval.py --data-dir ../shared/datasets --dataset fed-ml [--repeats 5] [--threads 1]

Times are CPU and wall seconds of this process, the variants interleaved; min and median. The compiled
scorer's one-off compile time is printed separately. The reference runs in its own chunks of users (400k
cells), the others in ``EVAL_CHUNK_CELLS``; the metric sums are compared with every scorer run in the
reference's chunks (the order in which per-user numbers are added changes the last bits of a float sum).
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

from federation.config import SimulationConfig  # noqa: E402
from federation.plan import dataset_for, make_plan  # noqa: E402
from recsys.data.dataset import Dataset, Interactions  # noqa: E402
from recsys.metrics import (EVAL_CHUNK_CELLS, RankingSums, add_target_sums, flat_index, hit_sums,  # noqa: E402
                            positions, rank_metrics)
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


def reference_rank_metrics(scores: torch.Tensor, train: Interactions, test: Interactions, targets: torch.Tensor,
                           k: int, er_ks: tuple[int, ...]) -> RankingSums:
    """The previous ``rank_metrics``: a full test mask, top-K, then a second top-K with test items masked."""
    num_users, num_items = scores.shape
    flat_scores = scores.view(-1)
    train_idx, test_idx = flat_index(train, num_items).to(scores.device), flat_index(test, num_items).to(scores.device)
    flat_scores[train_idx] = -torch.inf

    test_mask = torch.zeros(num_users * num_items, dtype=torch.bool, device=scores.device)
    test_mask[test_idx] = True
    top = scores.topk(min(k, num_items), dim=1).indices
    sums = hit_sums(test_mask.view(num_users, num_items).gather(1, top).to(scores.dtype), test, k, len(er_ks),
                     len(targets))
    if len(targets):
        targets = targets.to(scores.device)
        interacted = test_mask  # reused in place: test items, now plus train items
        interacted[train_idx] = True
        eligible = ~interacted.view(num_users, num_items)[:, targets]  # [B, T]
        flat_scores[test_idx] = -torch.inf
        top_er = scores.topk(min(max(er_ks), num_items), dim=1).indices
        add_target_sums(sums, positions(top_er, targets), eligible, er_ks)
    return sums


SCORERS = ("reference", "tiled", "compiled")
REFERENCE_CHUNK_CELLS = 400_000  # the previous scorer's chunks (users x items); its [U, M, h] buffer slows past that


def evaluate(dataset: Dataset, user_emb: torch.Tensor, theta: Theta, num_linear: int, targets: torch.Tensor, k: int,
             er_ks: tuple[int, ...], scorer: str = "tiled", buffers: ScoreBuffers | None = None,
             chunk_cells: int | None = None) -> RankingSums:
    """Metric sums over all users, scored in chunks of users as a shard does. ``scorer``: ``reference`` (the
    previous scorer and metrics, in its chunks), ``tiled`` (eager) or ``compiled`` (``score_all_items(compiled=True)``),
    in chunks of ``EVAL_CHUNK_CELLS`` unless ``chunk_cells`` is given."""
    chunk_cells = chunk_cells or (REFERENCE_CHUNK_CELLS if scorer == "reference" else EVAL_CHUNK_CELLS)
    chunk = max(1, chunk_cells // dataset.num_items)
    buffers = buffers or ScoreBuffers()
    sums = RankingSums.zeros(len(er_ks), len(targets))
    for start in range(0, dataset.num_users, chunk):
        rows = np.arange(start, min(start + chunk, dataset.num_users))
        train, test = dataset.train.subset(rows), dataset.test.subset(rows)
        if scorer == "reference":
            scores = reference_scores(user_emb[rows], theta, num_linear, buffers)
            sums = sums + reference_rank_metrics(scores, train, test, targets, k, er_ks)
        else:
            scores = score_all_items(user_emb[rows], theta, num_linear, buffers, compiled=scorer == "compiled")
            sums = sums + rank_metrics(scores, train, test, targets, k, er_ks)
    return sums


def spread_model(num_users: int, num_items: int, config: SimulationConfig, seed: int) -> tuple[torch.Tensor, Theta]:
    """User embeddings and Θ with scores spread out like a trained model's (initial values, scaled up)."""
    spec = config.model_spec(num_items)
    theta = init_theta(spec, torch.Generator().manual_seed(seed))
    theta[ITEM_EMBEDDING] *= 30
    return init_user_embeddings(num_users, spec.dim, torch.Generator().manual_seed(seed + 1)) * 30, theta


def popular_targets(user_emb: torch.Tensor, theta: Theta, num_linear: int, count: int) -> torch.Tensor:
    """Items that reach many users' top lists (so that ER@K is not trivially zero), plus an unpopular one."""
    scores = reference_scores(user_emb, theta, num_linear, ScoreBuffers())
    top = torch.bincount(scores.topk(30, dim=1).indices.reshape(-1), minlength=scores.shape[1])
    return torch.cat((top.topk(count).indices, scores.mean(0).argmin()[None]))


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
    spec = config.model_spec(dataset.num_items)
    targets = torch.cat((torch.tensor(make_plan(config, dataset).targets),
                         popular_targets(user_emb[:500], theta, spec.num_linear, 3)))
    print(f"targets {targets.tolist()} (the plan's, then items that reach many top lists)")
    buffers = {name: ScoreBuffers() for name in SCORERS}
    start = time.perf_counter()
    score_all_items(user_emb[:2], theta, spec.num_linear, compiled=True)
    print(f"first compiled call (compiles): {time.perf_counter() - start:.1f} s wall")
    cpu: dict[str, list[float]] = {name: [] for name in SCORERS}
    wall: dict[str, list[float]] = {name: [] for name in SCORERS}
    results = {}
    for _ in range(args.repeats):
        for name in SCORERS:
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            results[name] = evaluate(dataset, user_emb, theta, spec.num_linear, targets, config.top_k, config.er_ks,
                                     name, buffers[name])
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    print(f"\n{'':12}{'CPU min (s)':>12}{'CPU median':>12}{'wall min (s)':>14}{'wall median':>13}"
          f"{'vs reference (CPU min)':>24}")
    for name in SCORERS:
        print(f"{name:12}{min(cpu[name]):>12.3f}{np.median(cpu[name]):>12.3f}{min(wall[name]):>14.3f}"
              f"{np.median(wall[name]):>13.3f}{min(cpu['reference']) / min(cpu[name]):>23.2f}x")
    fields = ("test_users", "hr", "precision", "ndcg", "target_hits", "target_eligible")
    for name in SCORERS[1:]:  # the per-user numbers: in the reference's chunks, so the float sums add in one order
        same_chunks = evaluate(dataset, user_emb, theta, spec.num_linear, targets, config.top_k, config.er_ks, name,
                               buffers[name], REFERENCE_CHUNK_CELLS)
        same = all(np.array_equal(np.asarray(getattr(results["reference"], f)), np.asarray(getattr(same_chunks, f)))
                   for f in fields)
        gap = max(abs(getattr(results[name], f) - getattr(results["reference"], f)) / abs(getattr(results["reference"], f))
                  for f in ("hr", "precision", "ndcg"))
        print(f"{name}: metric sums identical to the reference's in its chunks: {same}; timed chunks: largest "
              f"relative difference of the float sums {gap:.1e}")
    print(results["compiled"].finalize(config.top_k, config.er_ks))


if __name__ == "__main__":
    main()

"""Cost of the SharpAP experiment on one thread: seconds per outer iteration of RevAdv and
RevAdv+SharpAP (and the peak resident memory), seconds per epoch of each victim, and the batched
WRMF sweep against a per-user loop of the same normal equations (ratio measured in one run).

    python benchmarks/bench_sharpap.py --dataset fed-ml --data-dir ../shared/datasets [--iterations 3]
    python benchmarks/bench_sharpap.py --dataset synthetic
    python benchmarks/bench_sharpap.py --dataset fed-ml --data-dir ../shared/datasets --device cuda --preset paper

With ``--device cuda`` the surrogate and the victims run on the GPU (batches and views still drawn on the CPU, as
in the experiment's cells), every timed step ends with a device synchronisation, and the peak GPU memory is printed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attacks.implicit.revadv import RevAdvSettings, plain_cotangent, run  # noqa: E402
from attacks.implicit.sharpap import SharpAP, SharpSettings  # noqa: E402
from attacks.implicit.wmf_surrogate import WMFSurrogate  # noqa: E402
from central.ranking_learner import RankingLearner, TrainSettings, native_objective  # noqa: E402
from attacks.implicit import PRESETS  # noqa: E402
from experiments.sharpap import DATASETS  # noqa: E402
from experiments.sharpap_victims import VICTIM_CHOICES, VICTIM_DIM, VICTIM_PRESETS  # noqa: E402
from experiments.sharpap_cell import load, setting, use_threads  # noqa: E402
from recsys.models.ranking import make_model  # noqa: E402
from recsys.models.wrmf import als_solve  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_peak(device: str) -> str:
    """The peak GPU memory since the last call (empty on the CPU)."""
    if device != "cuda":
        return ""
    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return f", peak GPU memory {peak:,.0f} MiB"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def attack_cost(poison, preset: str, iterations: int, device: str) -> None:
    surrogate = PRESETS[preset].surrogate
    for name, rule in (("revadv", plain_cotangent), ("revadv+sharpap", SharpAP(SharpSettings()))):
        _, history = run(WMFSurrogate(poison, surrogate, 0, device=device), poison,
                         RevAdvSettings(iterations=iterations, cos_every=0), np.random.default_rng(0), rule)
        steps = [row["seconds"] for row in history[1:-1]] or [history[0]["seconds"]]
        print(f"{name:<16} {np.mean(steps):8.2f} s per outer iteration (first {history[0]['seconds']:.2f} s), "
              f"peak RSS so far {peak_mib():,.0f} MiB{gpu_peak(device)}")


def victim_cost(dataset, preset: str, epochs: int, device: str, victims: list[str]) -> None:
    for name in victims:
        training = VICTIM_PRESETS[preset][name]
        model = make_model(name, dataset.num_users, dataset.num_items, training.dim or VICTIM_DIM[preset],
                           torch.Generator().manual_seed(0), **training.options).to(device)
        model.bind(dataset.train)
        settings = TrainSettings(1, training.lr, training.batch, weight_decay=training.weight_decay)
        learner = RankingLearner(model, native_objective(model, dataset.train, settings), torch.Generator().manual_seed(0),
                                 lr=training.lr, weight_decay=training.weight_decay)
        learner.train_epoch(0)  # warm-up: kernels, allocator, CUDA context
        synchronize(device)
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            learner.train_epoch(epoch)
        synchronize(device)
        print(f"{name:<16} {(time.perf_counter() - start) / epochs:8.2f} s per epoch (batch {training.batch})"
              f"{gpu_peak(device)}")


def als_ratio(dataset) -> None:
    model = make_model("wrmf", dataset.num_users, dataset.num_items, 64, torch.Generator().manual_seed(0))
    model.bind(dataset.train)
    y = model.item_emb.detach()
    start = time.perf_counter()
    als_solve(model.by_user, y, model.alpha, model.reg, dataset.num_users)
    batched = time.perf_counter() - start
    users = min(600, dataset.num_users)
    start = time.perf_counter()
    gram = y.T @ y + model.reg * torch.eye(64)
    for u in range(users):
        items = torch.from_numpy(dataset.train.user(u))
        rows = y[items]
        torch.linalg.solve(gram + model.alpha * rows.T @ rows, (1 + model.alpha) * rows.sum(0))
    loop = (time.perf_counter() - start) / users * dataset.num_users
    print(f"WRMF user half-sweep: batched {batched:.2f} s, per-user loop {loop:.2f} s (extrapolated from "
          f"{users} users), ratio {loop / batched:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--preset", choices=list(PRESETS), default="lean")
    parser.add_argument("--iterations", type=int, default=3, help="outer iterations timed per attack")
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per victim (after one untimed epoch)")
    parser.add_argument("--victims", nargs="+", choices=VICTIM_CHOICES, default=list(VICTIM_CHOICES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (above one with deterministic algorithms, as in the cells)")
    args = parser.parse_args()
    use_threads(args.threads, args.device)
    dataset = load(args.dataset, args.data_dir)
    print(dataset.describe())
    if args.device == "cpu":
        als_ratio(dataset)
    victim_cost(dataset, args.preset, args.epochs, args.device, args.victims)
    attack_cost(setting(dataset, 0), args.preset, args.iterations, args.device)


if __name__ == "__main__":
    main()

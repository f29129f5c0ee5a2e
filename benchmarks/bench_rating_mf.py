"""Time one epoch of the TCD paper's rating MF (d = 128, batch 2048, Adam) over a TCD-sized
training set (ML-100K: 971 users with the fake ones, 1,682 items, ~1.4 M pseudo-labels plus the
ratings): the project's hand-written gradients with fused Adam against the same objective
through autograd with torch's default Adam. Prints both and their ratio (one thread).

    python benchmarks/bench_rating_mf.py [--triples 1400000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from central.rating_mf import MatrixFactorization, MFConfig  # noqa: E402
from central.rating_split import RatingTriples  # noqa: E402

USERS, ITEMS = 971, 1682


def autograd_epoch(model: MatrixFactorization, data: RatingTriples, optimizer: torch.optim.Optimizer) -> None:
    """The same epoch written with autograd (the reference the hand-written gradients replace)."""
    p_table, q_table = optimizer.param_groups[0]["params"]
    order = torch.randperm(len(data), generator=model.generator)
    for start in range(0, len(data), model.config.batch_size):
        batch = order[start : start + model.config.batch_size]
        p, q = p_table[data.users[batch]], q_table[data.items[batch]]
        loss = ((data.values[batch] - (p * q).sum(1)) ** 2).mean()
        loss = loss + model.config.l2 * (p.pow(2).mean() + q.pow(2).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triples", type=int, default=1_400_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    data = RatingTriples(torch.randint(0, USERS, (args.triples,), generator=generator),
                         torch.randint(0, ITEMS, (args.triples,), generator=generator),
                         torch.rand(args.triples, generator=generator))
    timings: dict[str, list[float]] = {"hand-written + fused Adam": [], "autograd + Adam": []}
    for _ in range(args.repeats):  # alternate the two, so that load changes hit both
        model = MatrixFactorization(USERS, ITEMS, MFConfig(), torch.Generator().manual_seed(1))
        start = time.perf_counter()
        model.train_epoch(data)
        timings["hand-written + fused Adam"].append(time.perf_counter() - start)
        model = MatrixFactorization(USERS, ITEMS, MFConfig(), torch.Generator().manual_seed(1))
        tables = [model.user_factors.clone().requires_grad_(), model.item_factors.clone().requires_grad_()]
        optimizer = torch.optim.Adam(tables, lr=model.config.lr)
        start = time.perf_counter()
        autograd_epoch(model, data, optimizer)
        timings["autograd + Adam"].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in timings.items()}
    for name, values in timings.items():
        print(f"{name:28s} epoch {best[name]:.3f} s (best of {len(values)}: {', '.join(f'{v:.3f}' for v in values)})")
    print(f"speed-up {best['autograd + Adam'] / best['hand-written + fused Adam']:.1f}x")


if __name__ == "__main__":
    main()

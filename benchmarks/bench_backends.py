"""The in-process and the Ray backend on the same run, in one process: seconds per epoch and per evaluation
(backends alternated, ``--repeats`` times each; Ray also with every message through Ray calls instead of the
local sockets, the reference), the check that all give the same metrics, and this process's resident memory
after each of ``--cells`` sequential runs (a sweep in one process must not accumulate shards).

    python benchmarks/bench_backends.py --data-dir ../shared/datasets [--dataset fed-ml] [--shards 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.app import cached_shards  # noqa: E402
from federation.config import SimulationConfig, usable_cores  # noqa: E402
from harness import ray_engine  # noqa: E402
from harness.runner import run  # noqa: E402

BACKENDS = ("inprocess", "ray")
RAY_CALLS = "ray-calls"  # the Ray backend with every message through Ray calls, not the local sockets
TIMINGS = ("seconds", "eval_seconds")


@contextmanager
def ray_calls_only(enabled: bool):
    """Turn the Ray backend's local sockets off while ``enabled``."""
    local = ray_engine.LOCAL_SOCKETS
    ray_engine.LOCAL_SOCKETS = local and not enabled
    try:
        yield
    finally:
        ray_engine.LOCAL_SOCKETS = local


def rss_mb() -> float:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def metrics(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def time_backends(config: SimulationConfig, repeats: int, out: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Epoch and evaluation seconds of every epoch of every repeat, per backend; raises if the metrics differ."""
    times: dict[str, tuple[list[float], list[float]]] = {b: ([], []) for b in (*BACKENDS, RAY_CALLS)}
    reference = None
    for repeat in range(repeats):
        for variant in times:
            backend = "ray" if variant == RAY_CALLS else variant
            with ray_calls_only(variant == RAY_CALLS):
                history = run(SimulationConfig(**{**config.to_dict(), "backend": backend,
                                                  "out": str(out / f"{variant}-{repeat}")}), echo=False)
            if reference is None:
                reference = metrics(history)
            elif metrics(history) != reference:
                raise AssertionError(f"{variant} (repeat {repeat}) gave other metrics than the in-process run")
            times[variant][0].extend(row["seconds"] for row in history[1:])
            times[variant][1].extend(row["eval_seconds"] for row in history[1:])
    return times


def sweep_memory(config: SimulationConfig, backend: str, cells: int, out: Path) -> list[tuple[float, int]]:
    """(RSS in MiB, shards cached in this process) after each of ``cells`` one-epoch runs with seeds 0, 1, ..."""
    samples = []
    for cell in range(cells):
        run(SimulationConfig(**{**config.to_dict(), "backend": backend, "epochs": 1, "seed": cell,
                                "out": str(out / f"sweep-{backend}-{cell}")}), echo=False)
        samples.append((rss_mb(), cached_shards()))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--dataset", default="fed-ml")
    parser.add_argument("--shards", type=int, default=0, help="supernodes (default: one per usable core)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="runs per backend, alternated")
    parser.add_argument("--cells", type=int, default=5, help="sequential one-epoch runs per backend for the memory check")
    args = parser.parse_args()
    config = SimulationConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, num_shards=args.shards,
                              checkpoint_every=0, overwrite=True)
    print(f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.2f}; {config.resolved_shards()} shards")
    with tempfile.TemporaryDirectory() as folder:
        times = time_backends(config, args.repeats, Path(folder))
        print("metrics: identical on every backend (every epoch, every key)")
        print(f"\n{'backend':12}{'epoch (s, median)':>20}{'evaluation (s, median)':>24}")
        median = {b: (float(np.median(e)), float(np.median(v))) for b, (e, v) in times.items()}
        for backend, (epoch, evaluation) in median.items():
            print(f"{backend:12}{epoch:>20.3f}{evaluation:>24.3f}")
        for variant in ("ray", RAY_CALLS):
            print(f"{variant} / inprocess: epoch {median[variant][0] / median['inprocess'][0]:.2f}x, "
                  f"evaluation {median[variant][1] / median['inprocess'][1]:.2f}x")
        print("\nsequential one-epoch cells in this process: RSS (MiB) / shards cached, after each cell")
        for backend in BACKENDS:
            samples = sweep_memory(config, backend, args.cells, Path(folder))
            cells = "  ".join(f"{rss:.0f}/{count}" for rss, count in samples)
            print(f"{backend:12}{cells}   (last - second: {samples[-1][0] - samples[min(1, len(samples) - 1)][0]:+.0f} MiB)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""The scaling curve: a synthetic federation of N users x M items (``recsys.data.synthetic``), run through the
real simulation path (``harness.runner.run``: ServerApp + ClientApp, in-process backend) for one epoch, with
the evaluation before it and after it. Each size runs in a fresh subprocess, so that its peak RSS is its own;
a watchdog kills a size whose RSS passes ``--max-rss-gb``.

    python benchmarks/bench_scale.py [--users 10000 100000 1000000] [--items 10000] [--out runs/bench-scale]

Writes ``scale.csv`` and ``scale.png`` (s/epoch, s/eval and peak RSS against users) to ``--out`` and prints a
table. Columns: ``setup_s`` (dataset generation, shard data, process start), ``epoch_s`` (one epoch of
training), ``first_eval_s`` (the evaluation before training, which includes compiling the scorer once per
process where it is used) and ``eval_s`` (the one after the epoch; checkpoints off), ``peak_rss_gb`` (the
child's ``ru_maxrss``), ``wall_s`` (all of it), and the threads torch used per shard; ``*_cpu_s``: CPU seconds
of the child, all threads (the honest measure on a shared machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("users", "items", "interactions", "setup_s", "epoch_s", "epoch_cpu_s", "first_eval_s", "eval_s",
           "eval_cpu_s", "peak_rss_gb", "wall_s", "cpu_s", "threads", "hr@20")
POLL_S = 0.5


def child(users: int, items: int, items_per_user: int, shards: int, out: str) -> dict[str, float]:
    """One size, in this process: one epoch and its two evaluations through ``harness.runner.run``. The run
    folder writer is wrapped to read this process's CPU time (all threads) when the last round of the epoch
    ends and when its evaluation is reported."""
    import torch

    import harness.runner
    from federation.config import SimulationConfig
    from federation.plan import dataset_for

    cpu_at: dict[str, float] = {}

    class CpuClock(harness.runner.RunWriter):
        def on_round(self, epoch, round_in_epoch, stats):
            cpu_at["round"] = time.process_time()
            super().on_round(epoch, round_in_epoch, stats)

        def on_evaluation(self, row, history):
            cpu_at[f"evaluated-{row['epoch']}"] = time.process_time()
            super().on_evaluation(row, history)

    harness.runner.RunWriter = CpuClock
    start = time.perf_counter()
    config = SimulationConfig(dataset="synthetic", synthetic_users=users, synthetic_items=items,
                              synthetic_items_per_user=items_per_user, epochs=1, num_shards=shards,
                              checkpoint_every=0, out=out, overwrite=True)
    interactions = dataset_for(config).train.nnz + dataset_for(config).test.nnz
    history = harness.runner.run(config, echo=False)
    wall = time.perf_counter() - start
    first, last = history[0], history[-1]
    epoch = last["seconds"]
    return {"users": users, "items": items, "interactions": interactions,
            "setup_s": wall - epoch - first["eval_seconds"] - last["eval_seconds"], "epoch_s": epoch,
            "epoch_cpu_s": cpu_at["round"] - cpu_at["evaluated-0"], "first_eval_s": first["eval_seconds"],
            "eval_s": last["eval_seconds"], "eval_cpu_s": cpu_at["evaluated-1"] - cpu_at["round"],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "wall_s": wall,
            "cpu_s": time.process_time(), "threads": torch.get_num_threads(), "hr@20": last["test/hr@20"]}


def rss_gb(pid: int) -> float:
    """Resident set size of ``pid`` (0 where /proc is absent)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def measure(users: int, args: argparse.Namespace) -> dict[str, float] | None:
    """Run one size in a fresh subprocess under the RSS watchdog; None when it failed or was killed."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as out:
        command = [sys.executable, __file__, "--child", "--users", str(users), "--items", str(args.items),
                   "--items-per-user", str(args.items_per_user), "--shards", str(args.shards), "--out", out]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, rss_gb(process.pid))
            if peak > args.max_rss_gb:
                process.kill()
                print(f"{users:,} users: killed at {peak:.1f} GB RSS (--max-rss-gb {args.max_rss_gb:g})")
                return None
            time.sleep(POLL_S)
        output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        print(f"{users:,} users: the run failed (exit {process.returncode})")
        return None
    return json.loads(output.strip().splitlines()[-1])


def plot(rows: list[dict[str, float]], path: Path) -> None:
    """s/epoch, s/eval and peak RSS against users, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [row["users"] for row in rows]
    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("epoch_s", "one epoch"), ("eval_s", "one evaluation"), ("first_eval_s", "first evaluation"),
                       ("setup_s", "setup")):
        time_ax.plot(users, [row[key] for row in rows], marker="o", label=label)
    rss_ax.plot(users, [row["peak_rss_gb"] for row in rows], marker="o")
    time_ax.set(xscale="log", yscale="log", xlabel="users", ylabel="seconds",
                title=f"time ({rows[0]['items']:,} items)")
    rss_ax.set(xscale="log", xlabel="users", ylabel="GB", title="peak RSS")
    time_ax.legend()
    for ax in (time_ax, rss_ax):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--items-per-user", type=int, default=30)
    parser.add_argument("--shards", type=int, default=0, help="supernodes (0: the default, one in process)")
    parser.add_argument("--max-rss-gb", type=float, default=13.0)
    parser.add_argument("--out", default="runs/bench-scale")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.users[0], args.items, args.items_per_user, args.shards, args.out)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores visible; load average {os.getloadavg()[0]:.1f}")
    print("".join(f"{c:>14}" for c in COLUMNS))
    rows = []
    for users in args.users:
        row = measure(users, args)
        if row is None:
            continue
        rows.append(row)
        print("".join(f"{row[c]:>14,.0f}" if isinstance(row[c], int) else f"{row[c]:>14.3f}" for c in COLUMNS))
        with (out / "scale.csv").open("w", newline="") as handle:  # rewritten after every size
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if rows:
        plot(rows, out / "scale.png")
        print(f"wrote {out / 'scale.csv'} and {out / 'scale.png'}")


if __name__ == "__main__":
    main()

"""The run folder: config.json, metrics.jsonl / .csv (per evaluation), rounds.jsonl / .csv (the server's
per-round diagnostics), rejections.jsonl (every rejected upload and why), metrics.png, a progress bar and a
summary."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from federation.config import SimulationConfig
from federation.plan import Plan, dataset_for
from recsys.atomic import atomic_path, atomic_write_text

SUMMARY_KEYS = ("test/hr@{k}", "test/ndcg@{k}", "target/er@5", "target/er@10", "target/er@20", "target/er@30")
RUN_FILES = ("metrics.jsonl", "metrics.csv", "metrics.png", "rounds.jsonl", "rounds.csv", "rejections.jsonl")


def write_rows(out: Path, name: str, rows: list[dict[str, float | None]]) -> None:
    """``<name>.jsonl`` (one object per row) and ``<name>.csv`` with the same columns."""
    atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(out / f"{name}.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    """``metrics.jsonl`` (one object per evaluation) and ``metrics.csv``."""
    write_rows(out, "metrics", history)


def read_rows(path: Path) -> list[dict[str, float | None]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def plot_metrics(path: Path, history: list[dict[str, float]], title: str) -> None:
    """Test metrics, ER@K and the training loss over epochs, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(key for row in history for key in row))
    panels = [("test", [k for k in keys if k.startswith("test/")]),
              ("target items", [k for k in keys if k.startswith("target/")]),
              ("training loss", ["train/loss"]),
              ("upload norms (mean, max)", [k for k in keys if k.startswith("uploads/")])]
    panels = [(name, [k for k in ks if any(row.get(k) is not None for row in history)]) for name, ks in panels]
    panels = [(name, ks) for name, ks in panels if ks]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
            ax.plot(*zip(*points), marker="o", markersize=3, label=key)
        if name.startswith("upload"):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(history: list[dict[str, float]], top_k: int) -> str:
    """First, best and final value of the headline metrics."""
    keys = [k.format(k=top_k) for k in SUMMARY_KEYS if k.format(k=top_k) in history[0]]
    lines = [f"{'metric':<20}{'epoch 0':>10}{'max':>10}{'final':>10}"]
    for key in keys:
        values = [row[key] for row in history]
        lines.append(f"{key:<20}{values[0]:>10.4f}{max(values):>10.4f}{values[-1]:>10.4f}")
    final = history[-1]
    loss = "n/a" if final["train/loss"] is None else f"{final['train/loss']:.4f}"
    lines.append(f"{'train/loss':<20}{'':>10}{'':>10}{loss:>10}")
    lines.append(f"{'rejected_uploads':<20}{'':>10}{'':>10}{final['rejected_uploads']:>10.0f}")
    return "\n".join(lines)


def epoch_line(row: dict[str, float], top_k: int) -> str:
    loss = "   n/a" if row["train/loss"] is None else f"{row['train/loss']:.4f}"
    ers = " ".join(f"{k.split('/')[1]}={v:.4f}" for k, v in row.items() if k.startswith("target/"))
    return (f"epoch {int(row['epoch']):3d}  loss {loss}  HR@{top_k} {row[f'test/hr@{top_k}']:.4f}  "
            f"NDCG@{top_k} {row[f'test/ndcg@{top_k}']:.4f}  {ers}  "
            f"[train {row['seconds']:.2f}s, eval {row['eval_seconds']:.2f}s]")


class RunWriter:
    """Observer that writes the run folder and shows progress on stderr."""

    def __init__(self, config: SimulationConfig, progress: bool = True, echo: bool = True) -> None:
        self.config, self.out = config, Path(config.out)
        self.progress, self.echo = progress and sys.stderr.isatty(), echo
        self.bar = None
        self.history: list[dict[str, float]] = []
        self.rounds: list[dict[str, float | None]] = []
        self.rejections: list[dict[str, int | str]] = []

    def _print(self, text: str) -> None:
        if self.echo:
            (self.bar.write if self.bar is not None else print)(text)

    def on_start(self, config: SimulationConfig, plan: Plan, rounds_per_epoch: int, start_epoch: int) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if not config.resume:  # a fresh run (or --overwrite): nothing of an earlier run may stay behind
            for name in RUN_FILES:
                (self.out / name).unlink(missing_ok=True)
        self.rounds = [row for row in read_rows(self.out / "rounds.jsonl") if row["epoch"] <= start_epoch]
        done = rounds_per_epoch * start_epoch
        self.rejections = [row for row in read_rows(self.out / "rejections.jsonl") if row["round"] < done]
        resolved = {**config.to_dict(), "resolved": {
            "targets": list(plan.targets), "num_clients": plan.num_clients, "num_items": plan.num_items,
            "benign_clients": plan.num_benign, "malicious_clients": list(plan.malicious_ids),
            "shards": plan.num_shards, "device": config.resolved_device(), "rounds_per_epoch": rounds_per_epoch}}
        atomic_write_text(self.out / "config.json", json.dumps(resolved, indent=2) + "\n")
        self._print(dataset_for(config).describe())
        self._print(f"{plan.num_clients:,} clients in {plan.num_shards} shard(s), {rounds_per_epoch} rounds/epoch, "
                    f"targets {list(plan.targets)}; writing to {self.out}")
        if self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=config.epochs * rounds_per_epoch, unit="round", dynamic_ncols=True)

    def on_round(self, epoch: int, round_in_epoch: int, stats: dict[str, float | None]) -> None:
        self.rounds.append(stats)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_description(f"epoch {epoch}")

    def on_rejections(self, round_index: int, rejections: list) -> None:
        if rejections:  # written at once: a run stopped by --max-rejected leaves its reasons behind
            self.rejections += [{"round": round_index, "client": r.client, "reason": r.reason} for r in rejections]
            self._write_rejections()

    def _write_rejections(self) -> None:
        atomic_write_text(self.out / "rejections.jsonl", "".join(json.dumps(r) + "\n" for r in self.rejections))

    def on_evaluation(self, row: dict[str, float], history: list[dict[str, float]]) -> None:
        self.history = list(history)
        write_metrics(self.out, history)
        write_rows(self.out, "rounds", self.rounds)
        self._write_rejections()
        self._print(epoch_line(row, self.config.top_k))

    def on_finish(self, history: list[dict[str, float]]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        plot_metrics(self.out / "metrics.png", history, f"{self.config.dataset}, seed {self.config.seed}")
        self._print(summary_table(history, self.config.top_k))

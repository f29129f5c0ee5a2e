"""Figures 1–3 of Rong et al., *Poisoning Deep Learning Based Recommender Model in Federated
Learning Scenarios* (IJCAI 2022), each one command:

    python -m experiments.federated_poisoning figure1 --data-dir ../shared/datasets --seeds 0,1,2 --workers 2

Every (dataset, attack, ρ, seed) is one full federated run (30 epochs, the paper's settings) and one
cached sweep cell under ``<out>/cells/``, so figures that share runs (2 and 3) reuse them and an
interrupted sweep resumes. Each figure writes ``<name>.csv`` (every dataset, attack, ρ, seed, epoch,
metric, value), ``<name>.png`` laid out like the paper's, and ``<name>-summary.{csv,md}`` (max and final
ER@5/ER@10 and final test HR@20, means over seeds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.config import usable_cores
from harness.cli import CommandParser, add_common, add_list, check_choices, check_settings, guarded, parse
from harness.runner import run_in_folder
from harness.sweep import Cell, run_sweep
from harness.tables import markdown_table, write_table

ER_KS = (5, 10, 20, 30)
ATTACKS = ("none", "ra", "eb", "a-ra", "a-hum")
ATTACK_LABELS = {"none": "no attack", "ra": "RA", "eb": "EB", "eb-promote": "EB (promotion only)", "a-ra": "A-ra",
                 "a-hum": "A-hum"}
DATASET_LABELS = {"fed-ml": "ML", "fed-az": "AZ"}
PAPER_RHO = {"fed-ml": 0.005, "fed-az": 0.001}  # section 5.1
# Section 5.4 (ML, ρ = 0.1 %): max and final ER@5 / ER@10.
PAPER_VALUES = {
    ("fed-ml", "a-hum", 0.001): {"er@5 max": 1.0, "er@5 final": 0.5728, "er@10 max": 1.0, "er@10 final": 1.0},
    ("fed-ml", "a-ra", 0.001): {"er@5 max": 0.4514, "er@5 final": 0.2302, "er@10 max": 0.9960, "er@10 final": 0.5900},
}


@dataclass(frozen=True)
class Setting:
    """One curve of a figure: a dataset, an attack and its malicious-user proportion ρ."""

    dataset: str
    attack: str
    rho: float

    def label(self, field: str) -> str:
        if field == "dataset":
            return DATASET_LABELS.get(self.dataset, self.dataset)
        if field == "attack":
            return ATTACK_LABELS.get(self.attack, self.attack)
        return f"ρ = {self.rho:.1%}"


@dataclass(frozen=True)
class Figure:
    """A grid of settings drawn as panel rows (``rows``) × ER@K columns, one line per ``lines`` value."""

    title: str
    settings: tuple[Setting, ...]
    rows: str
    lines: str


FIGURES: dict[str, Figure] = {
    "figure1": Figure(
        "Attack effectiveness under different attacks on ML (ρ = 0.5%) and AZ (ρ = 0.1%)",
        tuple(Setting(d, a, 0.0 if a == "none" else PAPER_RHO[d]) for d in ("fed-ml", "fed-az") for a in ATTACKS),
        rows="dataset", lines="attack"),
    "figure2": Figure(
        "A-ra and A-hum with different malicious user proportions (ML)",
        tuple(Setting("fed-ml", a, r) for a in ("a-ra", "a-hum") for r in (0.005, 0.004, 0.003, 0.002, 0.001)),
        rows="attack", lines="rho"),
    "figure3": Figure(
        "A-ra vs A-hum with 0.1% and 0.2% malicious users (ML)",
        tuple(Setting("fed-ml", a, r) for r in (0.001, 0.002) for a in ("a-ra", "a-hum")),
        rows="rho", lines="attack"),
}


def restrict(figure: Figure, datasets: set[str], attacks: set[str]) -> Figure:
    """``figure`` with only the settings on ``datasets`` and ``attacks`` (each: all of them when empty)."""
    kept = tuple(s for s in figure.settings
                 if (not datasets or s.dataset in datasets) and (not attacks or s.attack in attacks))
    return Figure(figure.title, kept, figure.rows, figure.lines)


def cell_for(setting: Setting, seed: int, args: argparse.Namespace) -> Cell:
    params = {"dataset": setting.dataset, "attack": setting.attack, "malicious_frac": setting.rho, "seed": seed,
              "epochs": args.epochs, "data_dir": args.data_dir}
    rho = "" if setting.attack == "none" else f"-rho{setting.rho:g}"
    return Cell(f"{setting.dataset}-{setting.attack}{rho}-seed{seed}", params)


# ---- results -------------------------------------------------------------------------------------
def long_rows(figure: Figure, runs: dict[tuple[Setting, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every (dataset, attack, ρ, seed, epoch, metric, value) of the figure's runs."""
    rows = []
    for (setting, seed), history in runs.items():
        for row in history:
            for metric, value in row.items():
                if metric.startswith(("test/", "target/", "train/", "uploads/")) and value is not None:
                    rows.append({"dataset": setting.dataset, "attack": setting.attack, "rho": setting.rho,
                                 "seed": seed, "epoch": row["epoch"], "metric": metric, "value": value})
    return rows


def curve(histories: Sequence[list[dict[str, Any]]], metric: str) -> np.ndarray:
    """[seeds, epochs + 1] values of ``metric``."""
    return np.array([[row[metric] for row in history] for history in histories], dtype=float)


def summary_rows(figure: Figure, runs: dict[tuple[Setting, int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per setting, means over seeds: max and final ER@5/ER@10, first epoch with ER@10 ≥ 0.9, final HR@20."""
    rows = []
    for setting in figure.settings:
        histories = [h for (s, _), h in runs.items() if s == setting]
        row: dict[str, Any] = {"dataset": setting.dataset, "attack": setting.attack, "rho": setting.rho,
                               "seeds": len(histories)}
        for k in (5, 10):
            values = curve(histories, f"target/er@{k}")
            row[f"er@{k} max"], row[f"er@{k} final"] = float(values.max(1).mean()), float(values[:, -1].mean())
        reached = [np.flatnonzero(v >= 0.9) for v in curve(histories, "target/er@10")]
        row["epoch er@10>=0.9"] = (float(np.mean([r[0] for r in reached])) if all(len(r) for r in reached) else None)
        row["test hr@20 final"] = float(curve(histories, "test/hr@20")[:, -1].mean())
        for name, value in PAPER_VALUES.get((setting.dataset, setting.attack, setting.rho), {}).items():
            row[f"paper {name}"] = value
        rows.append(row)
    return rows


def plot_figure(figure: Figure, runs: dict[tuple[Setting, int], list[dict[str, Any]]], path: Path) -> None:
    """Rows of panels (``figure.rows``) × ER@K columns; a line per ``figure.lines`` value: mean over seeds,
    shaded between the seeds' minimum and maximum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    row_labels = list(dict.fromkeys(s.label(figure.rows) for s in figure.settings))
    fig, axes = plt.subplots(len(row_labels), len(ER_KS), figsize=(4 * len(ER_KS), 3.2 * len(row_labels)),
                             squeeze=False, sharey=True)
    for setting in figure.settings:
        histories = [h for (s, _), h in runs.items() if s == setting]
        r = row_labels.index(setting.label(figure.rows))
        for c, k in enumerate(ER_KS):
            values = curve(histories, f"target/er@{k}")
            epochs = [row["epoch"] for row in histories[0]]
            ax = axes[r][c]
            line, = ax.plot(epochs, values.mean(0), marker="o", markersize=2.5, label=setting.label(figure.lines))
            ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
            ax.set_title(f"{row_labels[r]}: ER@{k}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("ER@K")
        row[0].legend(fontsize=8)
    seeds = len({seed for _, seed in runs})
    fig.suptitle(f"{figure.title} (mean of {seeds} seed(s), band: min–max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m experiments.federated_poisoning", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figures", nargs="+", choices=[*FIGURES, "all"], help="which figures to produce")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (paper: 30)")
    add_list(p, "--attacks", str, "attack names", [], "only these attacks' settings (default: every setting of the figure)")
    add_common(p, out="runs/federated-poisoning", datasets=[])
    return p


@guarded()
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    seeds = args.seeds
    check_choices("--attacks", args.attacks, sorted({s.attack for f in FIGURES.values() for s in f.settings}))
    names = list(FIGURES) if "all" in args.figures else list(dict.fromkeys(args.figures))
    figures = {name: restrict(FIGURES[name], set(args.datasets), set(args.attacks)) for name in names}
    if not all(figure.settings for figure in figures.values()):
        print(f"error: --datasets {' '.join(args.datasets)!r} --attacks {' '.join(args.attacks)!r} leaves a figure "
              "without settings", file=sys.stderr)
        return 2
    # Seed-major order: a sweep stopped early has whole figures for its first seeds.
    wanted = {(setting, seed): cell_for(setting, seed, args)
              for seed in seeds for figure in figures.values() for setting in figure.settings}
    cells = list({cell.key: cell for cell in wanted.values()}.values())
    check_settings([cell.params for cell in cells])
    if args.workers == 1:
        import torch

        torch.set_num_threads(usable_cores())
    results = run_sweep(cells, run_in_folder, args.out, workers=args.workers)
    out = Path(args.out)
    for name, figure in figures.items():
        runs = {(s, seed): results[wanted[(s, seed)].key] for s in figure.settings for seed in seeds}
        write_table(long_rows(figure, runs), out / name)
        summary = summary_rows(figure, runs)
        write_table(summary, out / f"{name}-summary", title=f"{figure.title}: means over seeds {seeds}")
        plot_figure(figure, runs, out / f"{name}.png")
        print(f"\n{name}: {figure.title} -> {out / name}.png, .csv, -summary.md\n")
        print(markdown_table(summary, [c for c in summary[0] if not c.startswith("paper")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Federated defenses against the federated attacks: the attack × defense matrix, one command.

    python -m experiments.federated_defenses calibrate --data-dir ../shared/datasets --datasets fed-ml
    python -m experiments.federated_defenses matrix --data-dir ../shared/datasets --datasets fed-ml \\
        --attacks none,ra,eb,a-ra,a-hum --defenses sum,norm-bound,median,trimmed-mean,krum,multi-krum,bulyan \\
        --rho 0.001,0.005,0.01,0.05 --seeds 0,1,2 --workers 2

``calibrate`` runs clean training with ``sum`` and records, per round, quantiles of the benign clients' upload
norms (item rows, MLP neurons and biases, whole uploads), and their medians over rounds
(``<out>/calibration-<dataset>.json``): the scale an absolute clip bound would need. By default the
clipping rules set τ each round to the 0.9 quantile of that round's uploaded norms (``--clip-quantile``);
``--calibrated`` uses the calibrated medians of the 0.9 quantiles as fixed bounds instead. Either way the
thresholds are set without looking at any attack.

``matrix`` runs every (dataset, attack, ρ, defense, seed) as one cached sweep cell (``<out>/cells``) and writes
``matrix.csv`` / ``matrix.md`` (means over seeds: final and max ER@5/10/20, test HR@20 and NDCG@20, seconds per
epoch, clients and uploads dropped, target-row uploaders and their malicious share, fallbacks), ``matrix.png``
(a heatmap of final ER@10, one panel per ρ, plus the clean HR@20 of each defense) and prints the table with
the popularity baseline's HR@20 on the same split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defenses.federated.sum_rule import SumRule
from federation.config import ConfigError, SimulationConfig, usable_cores
from federation.plan import dataset_for, make_plan
from federation.uploads import ClientUploads
from harness.cli import CommandParser, add_common, add_list, check_settings, guarded, parse
from harness.sweep import Cell, cached_results, run_sweep
from harness.tables import markdown_table, write_table
from recsys.atomic import atomic_write_text
from recsys.metrics import popularity_rank_metrics
from server.aggregation import Aggregate, RoundInfo

CLIP_RULES = ("norm-bound", "centered-clip", "dp-clip")
QUANTILES = (0.5, 0.9, 0.99)
PAPER_MODEL = (SimulationConfig.dim, SimulationConfig.layers)  # NCF 8 / [8, 8]
METRIC_KEYS = ("target/er@5", "target/er@10", "target/er@20", "test/hr@20", "test/ndcg@20")


class NormQuantiles(SumRule):
    """``sum``, reporting per round the quantiles of the benign uploads' norms (item rows, MLP neurons, MLP
    biases, whole uploads): the measurement behind the clip bounds."""

    name = "norm-quantiles"

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        result = super().aggregate(uploads, info)
        benign = torch.from_numpy(~info.malicious)
        owner_benign = benign[uploads.row_owner()]
        groups = {"row": uploads.row_values[owner_benign].norm(dim=1),
                  "neuron": torch.cat([v[benign].norm(dim=2).flatten() for v in uploads.dense.values() if v.dim() == 3]),
                  "bias": torch.cat([v[benign].norm(dim=1) for v in uploads.dense.values() if v.dim() == 2]),
                  "upload": uploads.squared_norms()[benign].sqrt()}
        for name, norms in groups.items():
            if len(norms):
                for q, value in zip(QUANTILES, torch.quantile(norms.double(), torch.tensor(QUANTILES, dtype=torch.float64))):
                    result.report[f"{name}_norm_q{int(q * 100)}"] = float(value)
        return result


def setting_options(args: argparse.Namespace) -> dict[str, Any]:
    """The re-split and model size, each only where it is not the paper's (the dataset's split, NCF 8 / [8, 8]),
    so the paper's cells keep their keys and parameters."""
    split = {} if args.split_seed < 0 else {"split_seed": args.split_seed}
    model = {} if (args.dim, tuple(args.layers)) == PAPER_MODEL else {"dim": args.dim, "layers": list(args.layers)}
    return {**split, **model}


def base_settings(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """A run's data, model and training settings."""
    return {"dataset": dataset, "data_dir": args.data_dir, "epochs": args.epochs, "lr": args.lr,
            "negatives": args.negatives, **setting_options(args)}


def setting_tag(args: argparse.Namespace) -> str:
    """η, r and the options of ``setting_options``, as cell keys and file names show them."""
    options = setting_options(args)
    model = f"-d{args.dim}-l{'x'.join(map(str, args.layers))}" if "dim" in options else ""
    split = f"-resplit{args.split_seed}" if "split_seed" in options else ""
    return f"lr{args.lr:g}-r{args.negatives}{model}{split}"


def run_cell(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One federated run (1 shard); returns its metric history and per-round diagnostics."""
    from harness.runner import run_in_folder

    history = run_in_folder(params, folder)
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    return {"history": history, "rounds": rounds}


# ---- calibration ---------------------------------------------------------------------------------------
def calibrate(args: argparse.Namespace, datasets: list[str]) -> int:
    out = Path(args.out)
    cells = [Cell(f"calibrate-{d}-{setting_tag(args)}-seed{s}",
                  {**base_settings(args, d), "seed": s, "aggregation": f"{__name__}:NormQuantiles"})
             for d in datasets for s in args.seeds]
    check_settings([cell.params for cell in cells])
    results = run_sweep(cells, run_cell, out, workers=args.workers)
    for dataset in datasets:
        rounds = [r for c in cells if c.params["dataset"] == dataset for r in results[c.key]["rounds"]]
        summary = {name: {f"q{int(q * 100)}": float(np.median([r[f"defense/{name}_norm_q{int(q * 100)}"] for r in rounds]))
                          for q in QUANTILES} for name in ("row", "neuron", "bias", "upload")}
        bounds = {"clip_row": summary["row"]["q90"], "clip_mlp": max(summary["neuron"]["q90"], summary["bias"]["q90"]),
                  "clip_upload": summary["upload"]["q90"]}
        record = {"settings": base_settings(args, dataset), "seeds": args.seeds, "rounds": len(rounds),
                  "median over rounds of per-round benign norm quantiles": summary, "bounds (q90)": bounds}
        path = out / f"calibration-{dataset}.json"
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        print(f"{dataset}: {json.dumps(bounds)} -> {path}")
    return 0


def load_bounds(out: Path, dataset: str) -> dict[str, float]:
    path = out / f"calibration-{dataset}.json"
    if not path.is_file():
        raise ConfigError(f"no clip bounds for {dataset}: run `python -m experiments.federated_defenses calibrate "
                          f"--datasets {dataset}` with the same --out first (or drop --calibrated)")
    return json.loads(path.read_text())["bounds (q90)"]


# ---- the matrix ------------------------------------------------------------------------------------------
def defense_settings(defense: str, bounds: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """The rule and its thresholds: f policy, and for the clipping rules the absolute bounds (given or calibrated)
    or the per-round quantile."""
    settings: dict[str, Any] = {"aggregation": defense, "assumed_malicious": args.assumed_malicious}
    if defense in CLIP_RULES:
        row = bounds.get("clip_upload" if defense == "dp-clip" else "clip_row", 0.0)
        settings.update(clip_row=args.clip_row or row, clip_mlp=args.clip_mlp or bounds.get("clip_mlp", 0.0),
                        clip_quantile=args.clip_quantile)
    return settings


def matrix_cells(args: argparse.Namespace, datasets: list[str]) -> dict[tuple, Cell]:
    cells = {}
    for dataset in datasets:
        bounds = load_bounds(Path(args.out), dataset) if args.calibrated else {}
        for seed in args.seeds:
            for attack in args.attacks:
                for rho in ([0.0] if attack == "none" else args.rho):
                    for defense in args.defenses:
                        params = {**base_settings(args, dataset), "seed": seed, "attack": attack, "malicious_frac": rho,
                                  **defense_settings(defense, bounds, args)}
                        tag = "" if attack == "none" else f"-rho{rho:g}"
                        key = f"{dataset}-{setting_tag(args)}-{attack}{tag}-{defense}-seed{seed}"
                        cells[(dataset, attack, rho, defense, seed)] = Cell(key, params)
    return cells


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of one (dataset, attack, ρ, defense)."""
    row: dict[str, Any] = {"seeds": len(results)}
    for key in METRIC_KEYS:
        values = np.array([[h[key] for h in r["history"]] for r in results], dtype=float)
        row[f"{key.split('/')[1]} final"] = float(values[:, -1].mean())
        if key.startswith("target/"):
            row[f"{key.split('/')[1]} max"] = float(values.max(1).mean())
    histories = [r["history"][1:] for r in results]
    row["s/epoch"] = float(np.mean([h["seconds"] for hist in histories for h in hist]))
    row["rejected"] = float(np.mean([r["history"][-1]["rejected_uploads"] for r in results]))
    rounds = [x for r in results for x in r["rounds"]]
    for key, name in (("defense/dropped_uploads", "dropped/round"), ("defense/dropped_malicious_uploads", "dropped mal./round"),
                      ("defense/fallback_groups", "fallbacks/round"), ("defense/fallback_target_rows", "target fallbacks/round"),
                      ("target_rows/uploaders", "target uploaders/round"),
                      ("target_rows/malicious_uploaders", "target mal. uploaders/round")):
        values = [x.get(key) for x in rounds if x.get(key) is not None]
        row[name] = float(np.mean(values)) if values else None
    if row["target uploaders/round"]:
        row["target mal. share"] = (row["target mal. uploaders/round"] or 0.0) / row["target uploaders/round"]
    return row


def popularity_hr(config: SimulationConfig, k: int = 20) -> float:
    """HR@K of ranking every user's unseen items by training popularity, on the same split and metric code."""
    dataset = dataset_for(config)
    sums = popularity_rank_metrics(dataset.train, dataset.test, dataset.num_items,
                                   torch.tensor(make_plan(config, dataset).targets), k, (10,))
    return sums.finalize(k, (10,))[f"test/hr@{k}"]


def plot_matrix(rows: list[dict[str, Any]], path: Path, popularity: dict[str, float]) -> None:
    """Final ER@10 heatmaps (attack × defense), one panel per (dataset, ρ), and each defense's clean HR@20
    against the popularity baseline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["rho"]) for r in rows if r["attack"] != "none"})
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows if r["attack"] != "none"))
    clean = {(r["dataset"], r["defense"]): r["hr@20 final"] for r in rows if r["attack"] == "none"}
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 + 0.45 * len(defenses) * (len(panels) + 1), 3.6),
                             squeeze=False)
    for ax, (dataset, rho) in zip(axes[0], panels):
        grid = np.full((len(attacks), len(defenses)), np.nan)
        for r in rows:
            if r["dataset"] == dataset and r["rho"] == rho and r["attack"] in attacks:
                grid[attacks.index(r["attack"]), defenses.index(r["defense"])] = r["er@10 final"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(defenses)), defenses, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
        ax.set_title(f"{dataset}, ρ = {rho:.1%}: final ER@10", fontsize=9)
    if panels:  # a clean-only matrix has no heatmap, only the clean bars
        fig.colorbar(image, ax=axes[0][0], location="left", fraction=0.05, pad=0.25, label="final ER@10")
    ax = axes[0][-1]
    for dataset in sorted({d for d, _ in clean}):
        ax.bar([d for d in defenses if (dataset, d) in clean], [clean[(dataset, d)] for d in defenses if (dataset, d) in clean],
               alpha=0.7, label=dataset)
        ax.axhline(popularity[dataset], linestyle="--", color="black", linewidth=1, label=f"{dataset} popularity")
    ax.set_title("clean test HR@20 (no attack)", fontsize=9)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def matrix(args: argparse.Namespace, datasets: list[str]) -> int:
    cells = matrix_cells(args, datasets)
    check_settings([cell.params for cell in cells.values()])
    if args.cached_only:
        results = cached_results(list(cells.values()), args.out)
        print(f"{len(results)} of {len(cells)} cells have run; the table holds those", file=sys.stderr)
    else:
        results = run_sweep(list(cells.values()), run_cell, args.out, workers=args.workers)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for (dataset, attack, rho, defense, _), cell in cells.items():
        if cell.key in results:
            groups.setdefault((dataset, attack, rho, defense), []).append(results[cell.key])
    rows = [{"dataset": d, "attack": a, "rho": rho, "defense": f, **summarise(runs)}
            for (d, a, rho, f), runs in groups.items()]
    out = Path(args.out)
    stem = out / f"matrix-{setting_tag(args)}".replace(".", "p")  # no dot: with_suffix must not eat it
    baseline = {d: popularity_hr(SimulationConfig(**base_settings(args, d))) for d in datasets}
    split = "the dataset's split" if args.split_seed < 0 else f"split again at random (seed {args.split_seed})"
    title = (f"Attack × defense, {split}, NCF {args.dim} / {list(args.layers)}, η = {args.lr:g}, r = {args.negatives}, "
             f"{args.epochs} epochs, seeds {args.seeds}; "
             f"popularity HR@20: " + ", ".join(f"{d} {v:.4f}" for d, v in baseline.items()))
    write_table(rows, stem, title=title)
    plot_matrix(rows, stem.with_suffix(".png"), baseline)
    print(f"\n{title}\n")
    print(markdown_table(rows, ["dataset", "attack", "rho", "defense", "er@10 final", "er@10 max", "hr@20 final",
                                "s/epoch", "dropped/round", "target mal. share", "fallbacks/round"]))
    print(f"-> {stem}.csv, .md, .png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m experiments.federated_defenses", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("calibrate", "matrix"))
    add_common(p, out="runs/federated-defenses", datasets=["fed-ml"])
    add_list(p, "--attacks", str, "names", ["none", "ra", "eb", "a-ra", "a-hum"], "attacks (none: clean runs)")
    add_list(p, "--defenses", str, "names", ["sum", "norm-bound", "median", "trimmed-mean", "krum", "multi-krum",
                                              "bulyan", "centered-clip", "dp-clip", "row-gate"], "aggregation rules")
    add_list(p, "--rho", float, "numbers", [0.001, 0.005, 0.01, 0.05], "malicious proportions ρ")
    p.add_argument("--epochs", type=int, default=30, help="epochs per run (paper: 30)")
    p.add_argument("--lr", type=float, default=0.001, help="η (paper: 0.001)")
    p.add_argument("--negatives", type=int, default=4, help="r (paper: 4)")
    p.add_argument("--dim", type=int, default=PAPER_MODEL[0], help="NCF embedding size (paper: 8)")
    add_list(p, "--layers", int, "integers", list(PAPER_MODEL[1]), "NCF MLP widths (paper: 8,8)")
    p.add_argument("--split-seed", type=int, default=-1,
                   help="-1: the dataset's own train/test split; else every user's items split again at random")
    p.add_argument("--assumed-malicious", default="fraction:0.05", help="f policy of the robust rules")
    p.add_argument("--clip-row", type=float, default=0.0, help="absolute τ for item rows (default: per-round quantile)")
    p.add_argument("--clip-mlp", type=float, default=0.0, help="absolute τ for MLP neurons/biases (default: per-round quantile)")
    p.add_argument("--clip-quantile", type=float, default=0.9, help="τ = this quantile of each round's uploaded norms")
    p.add_argument("--calibrated", action="store_true", help="absolute τ from `calibrate` (same --out) instead")
    p.add_argument("--cached-only", action="store_true", help="report the cells that already ran; run nothing")
    return p


@guarded()
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    if args.workers == 1:
        torch.set_num_threads(usable_cores())
    return calibrate(args, args.datasets) if args.command == "calibrate" else matrix(args, args.datasets)


if __name__ == "__main__":
    sys.exit(main())

"""Model Stealing Attack against Recommender System (Zhu et al. 2023): Table 4, Table 7 and
Figs. 2, 3, 6, 7–8 in central mode.

    python -m experiments.model_stealing table4 --data-dir ../shared/datasets --seeds 0 1 2 --out runs/model-stealing

Every command is a sweep of cached cells (``experiments.stealing_cell.run_cell``), one per
target × seed × setting, each running all five attacks. Cell keys name every setting, so
commands with the same ``--out`` share cells (Table 4's cells are Fig. 2's K = 50 points);
trained targets, auxiliary models and PTD/PTA clones are cached under ``<out>/models``.
Each command writes ``<command>.csv``/``.md`` (mean ± standard deviation over seeds) and, for
the figures, a PNG into ``--out``, then prints the table.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacks.stealing import ATTACKS, StealingSettings
from harness.cli import CommandParser, UsageError, add_common, add_list, check_choices, guarded, parse
from harness.sweep import Cell, run_sweep
from harness.tables import markdown_table, write_table
from attacks.stealing.base import CLONE_MODELS
from recsys.data import load_dataset
from recsys.models.ranking import MODELS

ALL_ATTACKS = list(ATTACKS)  # qsd, ptd, ptq, pta, ptaq: Table 4's rows
LOSS_PAIRS = (("hinge", "hinge"), ("hinge", "bpr"), ("bpr", "hinge"), ("bpr", "bpr"))  # Table 7: L_r + L_p
TARGET_EPOCHS = {"bpr": 60, "ncf": 20, "lmf": 40, "wrmf": 15, "lightgcn": 60, "sgl": 30, "simgcl": 30}


def _mean_std(values: Sequence[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


class Experiment:
    """Builds cells from the command-line options and runs them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)

    def attacker(self, **changes: Any) -> dict[str, Any]:
        a = self.args
        base = StealingSettings(k=a.k, epochs=a.clone_epochs, aux_epochs=a.aux_epochs,
                                finetune_epochs=a.finetune_epochs)
        settings = {**asdict(base), **changes}
        StealingSettings(**settings)  # validate before anything runs
        settings.pop("seed")
        return settings

    def cell(self, target: str, seed: int, *, dataset: str | None = None, fraction: float | None = None,
             n_mix: int = 0, **attacker: Any) -> Cell:
        """One target × seed × setting; its key names every setting, so commands share cells."""
        a = self.args
        same = target if target in CLONE_MODELS else "bpr"
        settings = self.attacker(**{"clone": same if a.clone == "same" else a.clone, **attacker})
        params = {
            "dataset": dataset or a.datasets[0], "data_dir": a.data_dir, "target": target,
            "target_epochs": a.target_epochs or TARGET_EPOCHS[target], "seed": seed,
            "attacker_fraction": a.fraction if fraction is None else fraction, "n_mix": n_mix,
            "models_dir": str(self.out / "models"), "attacker": settings,
        }
        key = "-".join(str(part) for part in (
            params["dataset"], target, f"e{params['target_epochs']}", settings["clone"], f"k{settings['k']}",
            f"f{params['attacker_fraction']}", f"m{n_mix}", settings["ranking_loss"], settings["positive_loss"],
            settings["qsd_ranking_loss"], settings["qsd_positive_loss"],
            f"e{settings['epochs']}.{settings['aux_epochs']}.{settings['finetune_epochs']}", f"s{seed}"))
        return Cell(key, params)

    def run(self, cells: list[Cell]) -> dict[str, Any]:
        from experiments.stealing_cell import run_cell

        return run_sweep(cells, run_cell, self.out, workers=self.args.workers)


def table4(exp: Experiment) -> list[dict[str, Any]]:
    a = exp.args
    cells = [exp.cell(t, s, dataset=d)
             for d in a.datasets for t in a.targets for s in a.seeds]
    results = exp.run(cells)
    rows = []
    for attack in ALL_ATTACKS:
        row: dict[str, Any] = {"attack": attack.upper()}
        for d in a.datasets:
            for t in a.targets:
                row[f"{d}/{t}"] = _mean_std([results[c.key]["agr"][attack] for c in cells
                                             if c.params["dataset"] == d and c.params["target"] == t])
        rows.append(row)
    recall_row: dict[str, Any] = {"attack": "target Recall@50"}
    for d in a.datasets:
        for t in a.targets:
            recall_row[f"{d}/{t}"] = _mean_std([results[c.key]["target_recall"] for c in cells
                                                if c.params["dataset"] == d and c.params["target"] == t])
    return rows + [recall_row]


def table7(exp: Experiment) -> list[dict[str, Any]]:
    a = exp.args
    cells = [exp.cell(t, s, ranking_loss=r, positive_loss=p, qsd_ranking_loss=r, qsd_positive_loss=p)
             for t in a.targets for (r, p) in LOSS_PAIRS for s in a.seeds]
    results = exp.run(cells)
    rows = []
    for r, p in LOSS_PAIRS:
        row: dict[str, Any] = {"loss (L_r+L_p)": f"{r}+{p}"}
        for t in a.targets:
            for attack in ("qsd", "ptq", "ptaq"):
                row[f"{t}/{attack}"] = _mean_std([results[c.key]["agr"][attack] for c in cells
                                                  if c.params["target"] == t and c.params["attacker"]["ranking_loss"] == r
                                                  and c.params["attacker"]["positive_loss"] == p])
        rows.append(row)
    return rows


def _curve(exp: Experiment, name: str, axis: str, values: Sequence[Any], make) -> list[dict[str, Any]]:
    """Agr of every attack against each target along ``axis`` (one cell per value, target, seed)."""
    a = exp.args
    cells = {(v, t, s): make(v, t, s) for v in values for t in a.targets for s in a.seeds}
    results = exp.run(list(cells.values()))
    rows = []
    for t in a.targets:
        for v in values:
            group = [results[cells[(v, t, s)].key] for s in a.seeds]
            row: dict[str, Any] = {"target": t, axis: v}
            for attack in a.attacks:
                row[attack.upper()] = _mean_std([g["agr"][attack] for g in group])
            if axis == "mixed items":  # Fig. 8, and the items actually replaced (fewer for heavy users)
                row["served Recall@50"] = _mean_std([g["served_recall"] for g in group])
                row["mixed per list"] = statistics.fmean(g.get("mixed_per_list", 0.0) for g in group)
            rows.append(row)
    _plot_curves(rows, axis, [x.upper() for x in a.attacks], exp.out / f"{name}.png", name)
    return rows


def fig2(exp: Experiment) -> list[dict[str, Any]]:
    return _curve(exp, "fig2", "K", exp.args.lengths, lambda k, t, s: exp.cell(t, s, k=k))


def fig3(exp: Experiment) -> list[dict[str, Any]]:
    return _curve(exp, "fig3", "target fraction", exp.args.fractions, lambda f, t, s: exp.cell(t, s, fraction=f))


def fig7_8(exp: Experiment) -> list[dict[str, Any]]:
    return _curve(exp, "fig7-8", "mixed items", exp.args.mixes, lambda m, t, s: exp.cell(t, s, n_mix=m))


def fig6(exp: Experiment) -> list[dict[str, Any]]:
    a = exp.args
    clones = a.clones
    cells = {(t, c, s): exp.cell(t, s, clone=c)
             for t in a.targets for c in clones for s in a.seeds}
    results = exp.run(list(cells.values()))
    rows = []
    for attack in a.attacks:
        for t in a.targets:
            row: dict[str, Any] = {"attack": attack.upper(), "target \\ clone": t}
            for c in clones:
                row[c] = _mean_std([results[cells[(t, c, s)].key]["agr"][attack] for s in a.seeds])
            rows.append(row)
    _plot_heatmaps(rows, clones, exp.out / "fig6.png")
    return rows


COMMANDS = {"table4": table4, "table7": table7, "fig2": fig2, "fig3": fig3, "fig6": fig6, "fig7-8": fig7_8}


def _mean(cell: str) -> float:
    return float(cell.split(" ± ")[0])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line_panel(ax, curves: dict[str, tuple[list[Any], list[float]]], title: str, xlabel: str, ylabel: str) -> None:
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_curves(rows: list[dict[str, Any]], axis: str, series: list[str], path: Path, title: str) -> None:
    """One Agr panel per target (Figs. 2, 3, 7) and, for the defense, the served Recall@50 (Fig. 8)."""
    plt = _pyplot()
    targets = list(dict.fromkeys(row["target"] for row in rows))
    by_target = {t: [row for row in rows if row["target"] == t] for t in targets}
    defense = axis == "mixed items"
    fig, axes = plt.subplots(1, len(targets) + defense, figsize=(5 * (len(targets) + defense), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        points = by_target[target]
        _line_panel(ax, {name: ([r[axis] for r in points], [_mean(r[name]) for r in points]) for name in series},
                    f"target {target.upper()}", axis, "Agr")
    if defense:
        _line_panel(axes[0][-1], {t.upper(): ([r[axis] for r in by_target[t]],
                                              [_mean(r["served Recall@50"]) for r in by_target[t]]) for t in targets},
                    "served lists", axis, "Recall@50")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_heatmaps(rows: list[dict[str, Any]], clones: list[str], path: Path) -> None:
    """Fig. 6: Agr of each (target, clone) architecture pair, one heatmap per attack."""
    plt = _pyplot()
    attacks = list(dict.fromkeys(row["attack"] for row in rows))
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.5 * len(attacks), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        block = [row for row in rows if row["attack"] == attack]
        values = [[_mean(row[c]) for c in clones] for row in block]
        ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
        for i, line in enumerate(values):
            for j, value in enumerate(line):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value > 0.5 else "black")
        ax.set_xticks(range(len(clones)), [c.upper() for c in clones])
        ax.set_yticks(range(len(block)), [row["target \\ clone"].upper() for row in block])
        ax.set(title=f"{attack} Agr", xlabel="clone", ylabel="target")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m experiments.model_stealing", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS, help="the table or figure to produce")
    add_common(parser, out="runs/model-stealing", seeds=(0, 1, 2, 3, 4), datasets=["fed-ml"])
    add_list(parser, "--targets", str, "names", list(CLONE_MODELS),
             f"target model architectures ({', '.join(MODELS)}); Table 4 uses every --datasets, the others the first")
    parser.add_argument("--clone", choices=["same", *CLONE_MODELS], default="same",
                        help="clone architecture; 'same' copies the target's (BPR-MF for wrmf and the graph "
                             "targets; Fig. 6 sweeps all)")
    add_list(parser, "--clones", str, "names", list(CLONE_MODELS), "Fig. 6: clone architectures (heatmap columns)")
    add_list(parser, "--attacks", str, "names", ALL_ATTACKS,
             "attacks shown by the figures (every cell runs all five; the tables show theirs)")
    parser.add_argument("--k", type=int, default=50, help="length of the queried lists and of Agr@K (paper: 50)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of target users the attacker knows (0.1)")
    parser.add_argument("--target-epochs", type=int, default=None,
                        help=f"target training epochs (default per model: {TARGET_EPOCHS})")
    parser.add_argument("--clone-epochs", type=int, default=StealingSettings.epochs,
                        help="BPR epochs of the clone on the available target data")
    parser.add_argument("--aux-epochs", type=int, default=StealingSettings.aux_epochs,
                        help="BPR epochs of the auxiliary model on the auxiliary data")
    parser.add_argument("--finetune-epochs", type=int, default=StealingSettings.finetune_epochs,
                        help="epochs on the queried lists (PTQ/PTAQ fine-tuning, QSD training)")
    add_list(parser, "--lengths", int, "integers", [10, 20, 50, 100], "Fig. 2: list lengths K")
    add_list(parser, "--fractions", float, "numbers", [0.05, 0.1, 0.2, 0.3],
             "Fig. 3: shares of target users known to the attacker")
    add_list(parser, "--mixes", int, "integers", [0, 5, 10, 15, 20, 25],
             "Figs. 7-8: popular items mixed into every top-50 list")
    return parser


def check(args: argparse.Namespace) -> None:
    """Every option's range, then every dataset loads, so bad input fails in one line before any run."""
    check_choices("--targets", args.targets, list(MODELS))
    check_choices("--clones", args.clones, list(CLONE_MODELS))
    check_choices("--attacks", args.attacks, ALL_ATTACKS)
    if min(args.seeds) < 0:
        raise UsageError("--seeds must be >= 0")
    if not all(0 < f <= 1 for f in [args.fraction, *args.fractions]):
        raise UsageError("--fraction and --fractions must be in (0, 1]")
    if min(args.k, *args.lengths) < 2 or not all(0 <= m <= args.k for m in args.mixes):
        raise UsageError("--k and --lengths must be >= 2 and --mixes in [0, --k]")
    for dataset in args.datasets if args.command == "table4" else args.datasets[:1]:
        load_dataset(dataset, args.data_dir or None)


@guarded()
def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    check(args)
    rows = COMMANDS[args.command](Experiment(args))
    stem = Path(args.out) / args.command
    write_table(rows, stem, title=f"{args.command} (Agr@K, mean ± std over seeds {args.seeds})")
    print(markdown_table(rows))
    print(f"wrote {stem}.csv, {stem}.md" + (f", {stem}.png" if args.command.startswith("fig") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reproduce "Towards Robust Recommender Systems via Triple Cooperative Defense" (Wang et al.) in
central mode: Table 2 (attack HR@50 vs. knowledge cost), Table 3 (target HR@50 under Origin,
Attack, AT, RAT, TCD with RI, rank shift and a paired t-test of TCD against the best baseline),
Table 4 (test HR@50) and Fig. 4 (TCD vs. the pseudo-label rate).

    python -m experiments.tcd table3 --data-dir ../shared/datasets --seeds 0,1,2,3,4 --out runs/tcd

Every (dataset, targets, seed, attack, knowledge cost, defense) model is a cached sweep cell, so
Tables 3 and 4 share their cells and Table 2 reuses the undefended ones.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ttest_rel

from attacks.data_poisoning import ATTACKS
from central.poisoning import TARGET_KINDS, attack_profiles, choose_targets, inject, train_and_evaluate
from central.rating_mf import MFConfig
from central.rating_split import RatingSplit, split_ratings
from central.target_metrics import robustness_improvement
from defenses.tcd import PROJECTIONS, REPORTED, tcd_settings
from experiments import tcd_paper
from harness.cli import CommandParser, UsageError, add_common, add_list, check_choices, guarded, parse
from harness.sweep import Cell, run_sweep
from harness.tables import markdown_table, write_table
from recsys.data import load_dataset

PAPER_ATTACKS = ("average", "random", "aush", "pga", "tna")
BASELINES = ("attack", "at", "rat")
DEFENSE_OF = {"attack": "none", "at": "at", "rat": "rat", "tcd": "tcd"}
LABEL = {"origin": "Origin", "attack": "Attack", "at": "AT", "rat": "RAT", "tcd": "TCD"}
NUM_TARGETS = 5
TOP_K = 50
TCD_KEY = {"pseudo_label_rate": "rate", "projection": "pi-", "pretrain_epochs": "pre", "reported": "model-"}


@functools.lru_cache(maxsize=4)
def _split(dataset: str, data_dir: str, seed: int) -> RatingSplit:
    """``data_dir`` is the resolved ``--data-dir``; "" means ``$FEDREC_DATA_DIR``, else the cache."""
    data = load_dataset(dataset, data_dir or None)
    if data.ratings is None:
        raise UsageError(f"--datasets: {dataset!r} has no explicit ratings; use ml-100k, filmtrust or ml-1m")
    return split_ratings(data.ratings, data.num_users, data.num_items, seed)


def run_cell(params: dict[str, Any], folder: Path) -> dict[str, float]:
    """One model: the clean MF (attack None) or the ``defense`` trained on the poisoned data."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(params["seed"])
    start = time.perf_counter()
    config = MFConfig(epochs=params["epochs"])
    split = _split(params["dataset"], params["data_dir"], params["seed"])
    targets = choose_targets(split, params["targets"], NUM_TARGETS, params["seed"])
    if params["attack"] is not None:
        profile_key = (f"{params['dataset']}-{params['targets']}-s{params['seed']}-{params['attack']}"
                       f"-kc{params['knowledge_cost']:g}-as{params['attack_size']:g}-e{params['epochs']}")
        profiles = attack_profiles(split, params["attack"], targets, params["knowledge_cost"], params["attack_size"],
                                   params["seed"], config, cache=folder.parent / "profiles" / f"{profile_key}.npz")
        split = inject(split, profiles)
    report = train_and_evaluate(split, params["defense"], targets, params["seed"], params["dataset"], config,
                                params.get("tcd"), TOP_K)
    return {**report.as_dict(), "seconds": time.perf_counter() - start, "targets": targets.tolist()}


def _params(args: argparse.Namespace, dataset: str, kind: str, seed: int, attack: str | None,
            defense: str = "none", cost: float | None = None, rate: float | None = None) -> Cell:
    params = {"dataset": dataset, "data_dir": args.data_dir, "targets": kind, "seed": seed,
              "attack": attack, "defense": defense, "epochs": args.epochs,
              "knowledge_cost": None if attack is None else (args.knowledge_cost if cost is None else cost),
              "attack_size": None if attack is None else args.attack_size}
    key = f"{dataset}-{kind}-s{seed}-" + ("origin" if attack is None else
                                          f"{attack}-kc{params['knowledge_cost']:g}-as{args.attack_size:g}-{defense}")
    if defense == "tcd":
        tcd = {"pseudo_label_rate": rate, "projection": args.tcd_projection, "pretrain_epochs": args.tcd_pretrain,
               "reported": args.tcd_reported}
        tcd = {name: value for name, value in tcd.items() if value is not None}
        if tcd:  # a non-default TCD gets its own cell
            params["tcd"] = tcd
            key += "".join(f"-{TCD_KEY[name]}{value:g}" if isinstance(value, float) else f"-{TCD_KEY[name]}{value}"
                           for name, value in tcd.items())
    return Cell(key, params)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _p_value(better: list[float], other: list[float]) -> float:
    if len(better) < 2 or np.allclose(np.subtract(better, other), 0):
        return math.nan
    return float(ttest_rel(better, other).pvalue)


def _paper(values: tuple | None) -> str:
    """The paper's numbers as one compact cell ("–" where the paper gives none)."""
    if values is None:
        return "–"
    return " / ".join("–" if v is None else f"{v:.4f}" for v in values)


def _sweep(args: argparse.Namespace, cells: list[Cell]) -> dict[str, Any]:
    from experiments import tcd  # Ray pickles run_cell by reference, which fails for `python -m`'s __main__

    return run_sweep(cells, tcd.run_cell, args.out, workers=args.workers)


def _defense_cells(args: argparse.Namespace) -> dict[tuple, Cell]:
    cells = {}
    for dataset in args.datasets:
        for kind in args.targets:
            for seed in args.seeds:
                cells[dataset, kind, seed, "origin"] = _params(args, dataset, kind, seed, None)
                for column, defense in DEFENSE_OF.items():  # undefended first: they generate the profiles
                    for attack in args.attacks:
                        cells[dataset, kind, seed, attack, column] = _params(args, dataset, kind, seed, attack, defense)
    return cells


def _cell_key(dataset: str, kind: str, seed: int, attack: str, column: str) -> tuple:
    return (dataset, kind, seed, "origin") if column == "origin" else (dataset, kind, seed, attack, column)


def table3_and_4(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    """Target HR@50 (Table 3, with RI, rank shift and p-values) and test HR@50 (Table 4)."""
    cells = _defense_cells(args)
    results = _sweep(args, list(cells.values()))
    robust, general = [], []
    for dataset in args.datasets:
        for kind in args.targets:
            for attack in args.attacks:
                def series(column: str, metric: str) -> list[float]:
                    return [results[cells[_cell_key(dataset, kind, seed, attack, column)].key][metric]
                            for seed in args.seeds]

                hr = {c: series(c, "target_hr") for c in ("origin", *DEFENSE_OF)}
                rank = {c: series(c, "target_rank") for c in ("origin", *DEFENSE_OF)}
                test = {c: series(c, "test_hr") for c in ("origin", *DEFENSE_OF)}
                means = {c: _mean(v) for c, v in hr.items()}
                best = min(BASELINES, key=lambda c: means[c])
                row = {"dataset": dataset, "targets": kind, "attack": attack, "seeds": len(args.seeds),
                       **{LABEL[c]: means[c] for c in hr}}
                row |= {f"RI_{LABEL[c]}": robustness_improvement(means[c], means["origin"], means["attack"])
                        for c in ("at", "rat", "tcd")}
                row |= {"best_baseline": LABEL[best], "p_TCD_vs_best": _p_value(hr["tcd"], hr[best])}
                row |= {f"shift_{LABEL[c]}": _mean(rank["origin"]) - _mean(rank[c]) for c in DEFENSE_OF}
                paper = tcd_paper.TABLE3.get((dataset, kind, attack))
                paper_ri = math.nan if paper is None else robustness_improvement(paper[4], paper[0], paper[1])
                row |= {"paper O/A/AT/RAT/TCD": _paper(paper), "paper_RI_TCD": paper_ri}
                robust.append(row)
                general.append({"dataset": dataset, "targets": kind, "attack": attack, "seeds": len(args.seeds),
                                **{LABEL[c]: _mean(v) for c, v in test.items()},
                                "p_TCD_vs_Origin": _p_value(test["tcd"], test["origin"]),
                                "paper O/A/AT/RAT/TCD": _paper(tcd_paper.TABLE4.get((dataset, kind, attack)))})
    out = Path(args.out)
    write_table(robust, out / "table3", title="Table 3: target HR@50 (robustness); RI; rank shift = "
                "mean target rank of Origin minus that of the model (positive: targets promoted)")
    write_table(general, out / "table4", title="Table 4: test HR@50 (generalisation)")
    return [robust, general]


def table2(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    """Attack HR@50 of the undefended MF for each knowledge cost."""
    cells: dict[tuple, Cell] = {}
    for dataset in args.datasets:
        for kind in args.targets:
            for seed in args.seeds:
                cells[dataset, kind, seed, "origin"] = _params(args, dataset, kind, seed, None)
                for attack in args.attacks:
                    for cost in args.knowledge_costs:
                        cells[dataset, kind, seed, attack, cost] = _params(args, dataset, kind, seed, attack, cost=cost)
    results = _sweep(args, list(cells.values()))
    rows = []
    for dataset in args.datasets:
        for kind in args.targets:
            for attack in args.attacks:
                row = {"dataset": dataset, "targets": kind, "attack": attack, "seeds": len(args.seeds),
                       "origin": _mean([results[cells[dataset, kind, s, "origin"].key]["target_hr"]
                                        for s in args.seeds])}
                for cost in args.knowledge_costs:
                    row[f"kc={cost:g}"] = _mean([results[cells[dataset, kind, s, attack, cost].key]["target_hr"]
                                                 for s in args.seeds])
                row[f"paper O/kc={'/'.join(f'{c:g}' for c in tcd_paper.TABLE2_COSTS)}"] = _paper(
                    tcd_paper.TABLE2.get((dataset, kind, attack)))
                rows.append(row)
    write_table(rows, Path(args.out) / "table2", title="Table 2: attack HR@50 under different knowledge costs")
    return [rows]


def fig4(args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    """TCD's target HR@50 against the pseudo-label rate (rate 0 = the undefended model)."""
    cells: dict[tuple, Cell] = {}
    for dataset in args.datasets:
        for kind in args.targets:
            for seed in args.seeds:
                for attack in args.attacks:
                    for rate in args.rates:
                        defense = "none" if rate == 0 else "tcd"
                        default = rate == 0 or rate == tcd_settings(dataset).pseudo_label_rate  # Table 3's cell
                        cells[dataset, kind, seed, attack, rate] = _params(
                            args, dataset, kind, seed, attack, defense, rate=None if default else rate)
    results = _sweep(args, list(cells.values()))
    rows = [{"dataset": dataset, "targets": kind, "attack": attack, "pseudo_label_rate": rate,
             "seeds": len(args.seeds),
             "target_hr": _mean([results[cells[dataset, kind, s, attack, rate].key]["target_hr"]
                                 for s in args.seeds]),
             "test_hr": _mean([results[cells[dataset, kind, s, attack, rate].key]["test_hr"]
                               for s in args.seeds])}
            for dataset in args.datasets for kind in args.targets for attack in args.attacks for rate in args.rates]
    out = Path(args.out)
    write_table(rows, out / "fig4", title="Fig. 4: target HR@50 of TCD against the pseudo-label rate")
    _plot_fig4(rows, out / "fig4.png")
    return [rows]


def _plot_fig4(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for group in dict.fromkeys((r["dataset"], r["targets"], r["attack"]) for r in rows):
        points = [r for r in rows if (r["dataset"], r["targets"], r["attack"]) == group]
        ax.plot([r["pseudo_label_rate"] for r in points], [r["target_hr"] for r in points], marker="o",
                label=" / ".join(group))
    ax.set_xlabel("pseudo-label rate (0 = no defense)")
    ax.set_ylabel("target HR@50")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


COMMANDS = {"table2": table2, "table3": table3_and_4, "table4": table3_and_4, "fig4": fig4}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def build_parser() -> CommandParser:
    p = CommandParser(prog="python -m experiments.tcd", description=__doc__,
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("command", choices=sorted(COMMANDS),
                   help="table2: attack HR vs knowledge cost; table3/table4: defenses (both tables from the "
                        "same cells); fig4: TCD vs pseudo-label rate (CSV, Markdown and PNG)")
    add_common(p, out="runs/tcd", seeds=(0, 1, 2, 3, 4), datasets=["ml-100k", "filmtrust"])
    add_list(p, "--targets", str, "names", list(TARGET_KINDS),
             "target items: random items, or unpopular items (< 5 ratings)")
    add_list(p, "--attacks", str, "names", list(PAPER_ATTACKS),
             f"data-poisoning attacks ({', '.join(sorted(ATTACKS))})")
    p.add_argument("--epochs", type=int, default=40, help="training epochs T of every model")
    p.add_argument("--knowledge-cost", type=_fraction, default=0.4, help="share of the ratings the attacker knows")
    add_list(p, "--knowledge-costs", float, "numbers", [0.2, 0.4, 0.6, 0.8, 1.0], "knowledge costs of table2")
    p.add_argument("--attack-size", type=_fraction, default=0.03, help="fake users as a share of the users")
    p.add_argument("--tcd-projection", choices=PROJECTIONS, default=None,
                   help="TCD's Π (default: the dataset's, see defenses.tcd.DEFAULT_SETTINGS)")
    p.add_argument("--tcd-pretrain", type=int, default=None, help="TCD's T_pre (default: the dataset's)")
    p.add_argument("--tcd-reported", choices=REPORTED, default=None,
                   help="TCD's reported h_0: smallest validation MSE or last epoch (default: the dataset's)")
    add_list(p, "--rates", float, "numbers", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
             "pseudo-label rates of fig4 (0 = no defense)")
    return p


def check(args: argparse.Namespace) -> None:
    """Every option's range, then every dataset's first split, so bad input fails in one line before any run."""
    check_choices("--targets", args.targets, TARGET_KINDS)
    check_choices("--attacks", args.attacks, sorted(ATTACKS))
    if min(args.seeds) < 0 or args.epochs < 1:
        raise UsageError("--seeds must be >= 0 and --epochs >= 1")
    if args.tcd_pretrain is not None and not 0 <= args.tcd_pretrain < args.epochs:
        raise UsageError("--tcd-pretrain must be in [0, --epochs)")
    if args.knowledge_cost == 0 or args.attack_size == 0 or not all(0 < c <= 1 for c in args.knowledge_costs):
        raise UsageError("--knowledge-cost(s) must be in (0, 1] and --attack-size > 0")
    if not all(0 <= r <= 1 for r in args.rates):
        raise UsageError("--rates must be in [0, 1]")
    for dataset in args.datasets:
        _split(dataset, args.data_dir, args.seeds[0])


@guarded()
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    check(args)
    for rows in COMMANDS[args.command](args):
        print(markdown_table(rows))
    print(f"tables written to {Path(args.out).resolve()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

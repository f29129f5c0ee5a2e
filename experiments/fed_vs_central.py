"""Federated against centralized poisoning on the same data, NCF, targets, budget and metrics:

    python -m experiments.fed_vs_central --datasets fed-ml --data-dir ../shared/datasets \\
        --rho 0.001 0.005 0.01 0.03 --attacks random bandwagon revadv a-ra a-hum eb --targets unpopular random \\
        --seeds 0 1 2 --workers 2

For every dataset, target kind, seed and ρ the attacker controls m = ⌊ρ·N⌋ fake users (N real users) promoting
the same targets (``unpopular``: the T least popular items, the federated default; ``random``: T items drawn per
seed among those with a training interaction). Conditions, each a cached sweep cell (``<out>/cells``):

* ``central`` — the federated NCF trained centrally (``central.ncf_trainer``) on the real users plus the m fake
  profiles of a profile attack (``attacks.implicit``: random, bandwagon, targets-only, random-floor, popular-floor,
  revadv, revadv-popular, rapu, dada, each gradient attack with +sharpap) as extra users;
* ``federated`` — the federated paper setting (``harness.runner``) with the same m profiles played by fake
  clients that train honestly on them (``--attack profile:NAME``), or with model poisoning (a-ra, a-hum, eb, …);
* ``none`` in each mode.

Both modes evaluate through ``recsys.metrics.ncf_rank_metrics`` (HR@K/NDCG@K on the real users' test lists,
ER@K over the real users). Writes ``fed-vs-central.csv``/``.md`` (means over seeds: final ER@5/10/20, max ER@10,
final HR@20/NDCG@20, the attacker's cost: fake users, profile items, malicious uploads, seconds to generate the
profiles, training seconds), ``reach.md`` (the smallest ρ with final ER@10 ≥ 0.5) and ``fed-vs-central.png``
(final ER@10 against ρ, one line per attack, a panel per mode) to ``--out``, and prints the table beside the
popularity baseline's HR@20.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.federated.profile_clients import implicit_profiles
from attacks.implicit import ATTACKS as PROFILE_ATTACKS
from attacks.implicit import GRADIENT_ATTACKS, FakeProfiles
from central.ncf_trainer import Evaluation, train_central_ncf
from central.ranking_learner import TrainSettings
from federation.config import SimulationConfig, usable_cores
from federation.plan import Plan, dataset_for, make_plan
from federation.plugins import MALICIOUS_STRATEGIES, PROFILE_ATTACK_PRESETS
from harness.cli import CommandParser, UsageError, add_common, add_list, check_choices, guarded, parse
from harness.runner import check_run, run_in_folder
from harness.sweep import Cell, cached_results, run_sweep
from harness.tables import markdown_table, write_table
from recsys.data.dataset import Dataset, Interactions
from recsys.metrics import popularity_rank_metrics

MODEL_ATTACKS = tuple(name for name in MALICIOUS_STRATEGIES if not name.startswith("profile:"))
TARGET_KINDS = ("unpopular", "random")
MODES = ("central", "federated")
PROFILE = "profile:"
REACH = 0.5  # the ER@10 a "successful" attack reaches
METRICS = {"er@5": "target/er@5", "er@10": "target/er@10", "er@20": "target/er@20", "hr@20": "test/hr@20",
           "ndcg@20": "test/ndcg@20"}
COLUMNS = ["dataset", "targets", "mode", "attack", "rho", "seeds", "er@5", "er@10", "er@20", "er@10 max", "hr@20",
           "ndcg@20", "fake users", "profile items", "uploads", "profile s", "train s"]


def choose_targets(dataset: Dataset, kind: str, count: int, seed: int) -> tuple[int, ...]:
    """``unpopular``: the ``count`` least popular items (the federated default); ``random``: ``count`` items drawn
    uniformly (per dataset and seed) among the items with a training interaction."""
    if kind == "unpopular":
        return tuple(int(i) for i in dataset.least_popular_items(count))
    present = np.flatnonzero(np.bincount(dataset.train.items, minlength=dataset.num_items) > 0)
    rng = np.random.default_rng(zlib.crc32(f"targets/{dataset.name}/{seed}".encode()))
    return tuple(int(i) for i in np.sort(rng.choice(present, count, replace=False)))


# ---- cells ---------------------------------------------------------------------------------------------
def poisoned_train(config: SimulationConfig) -> tuple[Interactions, Plan, FakeProfiles | None]:
    """Central training data of ``config``: the real users' lists, then (for ``attack = profile:NAME``) the m
    fake profiles that the federated run's fake clients train on, as users N..N+m-1."""
    dataset = dataset_for(config)
    plan = make_plan(config, dataset)
    if config.attack == "none":
        return dataset.train, plan, None
    profiles = implicit_profiles(config.attack.removeprefix(PROFILE), config, np.asarray(plan.targets),
                                 len(plan.malicious_ids))
    return profiles.inject(dataset.train), plan, profiles


def central_cell(params: dict[str, Any], settings: TrainSettings) -> dict[str, Any]:
    """Central NCF on the real users plus the injected profiles, evaluated on the real users."""
    config = SimulationConfig.from_mapping(params)
    dataset = dataset_for(config)
    start = time.perf_counter()
    train, plan, profiles = poisoned_train(config)
    profile_seconds = time.perf_counter() - start
    evaluation = Evaluation(dataset.train, dataset.test, np.asarray(plan.targets), config.top_k, config.er_ks)
    _, history = train_central_ncf(train, config.model_spec(dataset.num_items), settings, config.seed, evaluation)
    return {"history": history, "fake users": len(plan.malicious_ids), "uploads": 0,
            "profile items": profiles.lists.nnz if profiles else 0, "profile s": profile_seconds,
            "train s": sum(row["seconds"] for row in history)}


def federated_cell(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One federated run; the attacker's uploads are counted by the server (``rounds.jsonl``)."""
    history = run_in_folder(params, folder)
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    config = SimulationConfig.from_mapping(params)
    return {"history": history, "fake users": len(make_plan(config, dataset_for(config)).malicious_ids),
            "uploads": sum(r["uploads/malicious_clients"] for r in rounds),
            "train s": sum(row["seconds"] for row in history)}


def run_cell(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A sweep cell: ``params`` = the run's ``SimulationConfig`` fields plus ``mode`` (and ``central`` settings)."""
    settings = {k: v for k, v in params.items() if k not in ("mode", "central")}
    if params["mode"] == "central":
        return central_cell(settings, TrainSettings(**params["central"]))
    return federated_cell(settings, folder)


def make_cells(args: argparse.Namespace) -> dict[tuple, Cell]:
    """(dataset, target kind, mode, attack, ρ, seed) → cell."""
    profile = [a for a in args.attacks if a in PROFILE_ATTACKS]
    model = [a for a in args.attacks if a in MODEL_ATTACKS]
    central = {"epochs": args.epochs, "lr": args.central_lr, "batch_size": args.central_batch,
               "negatives": args.negatives}
    cells = {}
    for dataset_name in args.datasets:
        for seed in args.seeds:
            base = {"dataset": dataset_name, "data_dir": args.data_dir, "seed": seed, "epochs": args.epochs,
                    "lr": args.lr, "negatives": args.negatives, "fake_profile_items": args.profile_items}
            dataset = dataset_for(SimulationConfig.from_mapping(base))
            for kind in args.targets:
                targets = list(choose_targets(dataset, kind, args.num_targets, seed))
                for mode in MODES:
                    attacks = ["none", *profile, *(model if mode == "federated" else [])]
                    for attack in attacks:
                        for rho in [0.0] if attack == "none" else args.rho:
                            spec = f"{PROFILE}{attack}" if attack in profile else attack
                            params = {**base, "targets": targets, "attack": spec, "malicious_frac": rho, "mode": mode}
                            if mode == "central":
                                params["central"] = central
                            tag = "" if attack == "none" else f"-rho{rho:g}"
                            if attack in GRADIENT_ATTACKS:  # a gradient attack: its preset is part of the cell
                                params["profile_preset"] = args.profile_preset
                                tag += f"-{args.profile_preset}"
                            key = (f"{dataset_name}-{kind}-{mode}-{attack}{tag}-e{args.epochs}-lr{args.lr:g}"
                                   f"-r{args.negatives}-seed{seed}")
                            cells[(dataset_name, kind, mode, attack, rho, seed)] = Cell(key, params)
    return cells


# ---- report --------------------------------------------------------------------------------------------
def count(value: float) -> int | float:
    """A mean of counts: an int when whole (the same over seeds), else rounded to one decimal."""
    return int(value) if float(value).is_integer() else round(float(value), 1)


def summarise(results: list[dict[str, Any]], generation: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds of one condition; ``generation``: the central cells that generated its profiles (their
    profile items and seconds stand for the federated fake clients', which train on the same profiles)."""
    row: dict[str, Any] = {"seeds": len(results)}
    for name, key in METRICS.items():
        row[name] = float(np.mean([r["history"][-1][key] for r in results]))
    row["er@10 max"] = float(np.mean([max(h[METRICS["er@10"]] for h in r["history"]) for r in results]))
    row["fake users"], row["uploads"] = (count(np.mean([r[n] for r in results])) for n in ("fake users", "uploads"))
    items, seconds = ([r[n] for r in generation] for n in ("profile items", "profile s"))
    row["profile items"] = count(np.mean(items)) if items else None
    row["profile s"] = float(np.mean(seconds)) if seconds else None
    row["train s"] = float(np.mean([r["train s"] for r in results]))
    return row


def reach_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, targets, mode, attack): the smallest measured ρ whose final ER@10 is ≥ ``REACH``."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in sorted((r for r in rows if r["attack"] != "none"), key=lambda r: r["rho"]):
        key = (r["dataset"], r["targets"], r["mode"], r["attack"])
        entry = out.setdefault(key, dict(zip(("dataset", "targets", "mode", "attack"), key),
                                         **{"rho measured": [], f"first rho with er@10>={REACH}": None}))
        entry["rho measured"].append(f"{r['rho']:g}")
        if entry[f"first rho with er@10>={REACH}"] is None and r["er@10"] >= REACH:
            entry[f"first rho with er@10>={REACH}"] = f"{r['rho']:g}"
    for entry in out.values():
        entry["rho measured"] = " ".join(entry["rho measured"])
    return list(out.values())


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Final ER@10 against ρ, one line per attack (the clean level dashed), a panel per (dataset, targets) × mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["dataset"], r["targets"]) for r in rows))
    fig, axes = plt.subplots(len(groups), len(MODES), figsize=(5.2 * len(MODES), 3.4 * len(groups)), squeeze=False,
                             sharey=True)
    for i, (dataset, kind) in enumerate(groups):
        for j, mode in enumerate(MODES):
            ax = axes[i][j]
            mine = [r for r in rows if (r["dataset"], r["targets"], r["mode"]) == (dataset, kind, mode)]
            attacks = list(dict.fromkeys(r["attack"] for r in mine if r["attack"] != "none"))
            for n, attack in enumerate(attacks):  # shrinking markers keep overlapping lines visible
                points = sorted((r["rho"], r["er@10"]) for r in mine if r["attack"] == attack)
                ax.plot([100 * p[0] for p in points], [p[1] for p in points], marker="os^vD<>"[n % 7],
                        markersize=9 - 5 * n / max(1, len(attacks) - 1), alpha=0.85,
                        label=attack if attack in MODEL_ATTACKS else f"{attack} profiles")
            for r in mine:
                if r["attack"] == "none":
                    ax.axhline(r["er@10"], linestyle="--", color="grey", linewidth=1, label="no attack")
            ax.axhline(REACH, linestyle=":", color="black", linewidth=0.8)
            ax.set_title(f"{dataset}, {kind} targets, {mode}", fontsize=9)
            ax.set_xscale("log")
            ax.set_xlabel("ρ (% fake users, log scale)")
            ax.set_ylabel("final ER@10")
            ax.set_ylim(-0.03, 1.03)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def popularity_hr(dataset_name: str, data_dir: str, k: int = 20) -> float:
    dataset = dataset_for(SimulationConfig(dataset=dataset_name, data_dir=data_dir))
    sums = popularity_rank_metrics(dataset.train, dataset.test, dataset.num_items, torch.zeros(0, dtype=torch.int64),
                                   k, ())
    return sums.finalize(k, ())[f"test/hr@{k}"]


def report(cells: dict[tuple, Cell], results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    generation: dict[tuple, list[dict[str, Any]]] = {}
    for (dataset, kind, mode, attack, rho, seed), cell in cells.items():
        if cell.key in results:
            groups.setdefault((dataset, kind, mode, attack, rho), []).append(results[cell.key])
            if mode == "central":
                generation.setdefault((dataset, kind, attack, rho), []).append(results[cell.key])
    rows = [{"dataset": d, "targets": k, "mode": m, "attack": a, "rho": rho,
             **summarise(runs, generation.get((d, k, a, rho), []) if a in PROFILE_ATTACKS else [])}
            for (d, k, m, a, rho), runs in groups.items()]
    out = Path(args.out)
    baseline = {d: popularity_hr(d, args.data_dir) for d in args.datasets}
    title = (f"Federated vs central poisoning: {args.epochs} epochs, federated η {args.lr:g}, central Adam "
             f"{args.central_lr:g} (batch {args.central_batch}), r = {args.negatives}, {args.num_targets} target(s), "
             f"{args.profile_items} items per fake profile, seeds {args.seeds}; popularity HR@20: "
             + ", ".join(f"{d} {v:.4f}" for d, v in baseline.items()))
    write_table(rows, out / "fed-vs-central", COLUMNS, title=title)
    reach = reach_rows(rows)
    write_table(reach, out / "reach", title=f"Smallest measured ρ with final ER@10 ≥ {REACH}")
    plot(rows, out / "fed-vs-central.png")
    print(f"\n{title}\n")
    print(markdown_table(rows, COLUMNS, digits=3))
    print(markdown_table(reach))
    print(f"-> {out / 'fed-vs-central'}.csv, .md, .png; {out / 'reach'}.md")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="python -m experiments.fed_vs_central", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, out="runs/fed-vs-central", datasets=["fed-ml"])
    add_list(p, "--attacks", str, "names", ["random", "bandwagon", "revadv", "a-ra", "a-hum", "eb"],
             f"profile attacks ({', '.join(PROFILE_ATTACKS)}: both modes) and model poisoning "
             f"({', '.join(MODEL_ATTACKS)}: federated); clean runs are always included")
    add_list(p, "--rho", float, "numbers", [0.001, 0.005, 0.01, 0.03], "fake-user proportions ρ (m = ⌊ρ·N⌋)")
    add_list(p, "--targets", str, "kinds", list(TARGET_KINDS), "target kinds")
    p.add_argument("--num-targets", type=int, default=1, help="T, targets per run (paper: 1)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every run, central and federated (paper: 30)")
    p.add_argument("--lr", type=float, default=0.001, help="federated η (paper: 0.001)")
    p.add_argument("--negatives", type=int, default=4, help="r, negatives per positive in both modes (paper: 4)")
    p.add_argument("--central-lr", type=float, default=0.01, help="Adam learning rate of central training")
    p.add_argument("--central-batch", type=int, default=1024, help="observed pairs per central mini-batch")
    p.add_argument("--profile-items", type=int, default=30, help="items per fake profile, targets included")
    p.add_argument("--profile-preset", choices=PROFILE_ATTACK_PRESETS, default="lean",
                   help="settings of the gradient profile attacks (revadv, rapu, dada, +sharpap; "
                        "attacks.implicit.PRESETS)")
    p.add_argument("--cached-only", action="store_true", help="report the cells that already ran; run nothing")
    return p


@guarded()
def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    check_choices("--attacks", args.attacks, [*PROFILE_ATTACKS, *MODEL_ATTACKS])
    check_choices("--targets", args.targets, TARGET_KINDS)
    try:
        TrainSettings(args.epochs, args.central_lr, args.central_batch, args.negatives)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.workers == 1:
        torch.set_num_threads(usable_cores())
    cells = make_cells(args)
    for cell in cells.values():  # bad settings, missing data or ⌊ρ·N⌋ = 0 fail here, in one line
        check_run(SimulationConfig.from_mapping({k: v for k, v in cell.params.items() if k not in ("mode", "central")}))
    if args.cached_only:
        results = cached_results(list(cells.values()), args.out)
        print(f"{len(results)} of {len(cells)} cells have run; the table holds those", file=sys.stderr)
    else:
        results = run_sweep(list(cells.values()), run_cell, args.out, workers=args.workers)
    report(cells, results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

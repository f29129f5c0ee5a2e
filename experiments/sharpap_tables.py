"""The SharpAP experiment's tables and figures from its measured cells: target promotion with paired t-tests, the
attack papers' own measures, the attacks' diagnostics, popularity bands, the anatomy of the target scores and clean
utility, each a list of rows (``harness.tables`` writes them)."""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.implicit import SHARP_SUFFIX, FakeProfiles
from experiments.sharpap_cell import cell_setting, load, setting
from harness.sweep import Cell
from recsys.promotion_metrics import BANDS, popularity_bands

KS = (10, 20, 50)
ANATOMY_COLUMNS = {"anatomy/target_norm_percentile": "|q_t| percentile", "anatomy/target_to_kth_norm": "|q_t| / |q_k|",
                   "anatomy/target_cos": "cos(p_u, q_t)", "anatomy/target_cos_std": "std cos(p_u, q_t)",
                   "anatomy/needed_cos": "needed cos", "anatomy/kth_cos": "cos(p_u, q_k)",
                   "anatomy/tail_share": "tail share of top 20", "anatomy/norm_popularity_spearman": "ρ(|q|, count)",
                   "anatomy/fake_to_real_user_norm": "|p| fake / real"}

# The paper's headline numbers (summary of arXiv 2604.22170); the unit of the transfer gains is not stated.
PAPER = {
    ("fed-ml", "wrmf", "revadv"): "H@10 0.32",
    ("fed-ml", "wrmf", "revadv+sharpap"): "H@10 0.64",
    ("fed-ml", "bpr", "revadv+sharpap"): "+16 over RevAdv",
    ("fed-ml", "lightgcn", "revadv+sharpap"): "+22 over RevAdv",
    ("fed-ml", "sgl", "revadv+sharpap"): "+18 over RevAdv",
    ("gowalla", "simgcl", "revadv+sharpap"): "H@20 ≈ +30% over RevAdv",
    ("gowalla-full", "simgcl", "revadv+sharpap"): "H@20 ≈ +30% over RevAdv",
}


def measured_runs(args: argparse.Namespace) -> range:
    """The runs a command measures: ``--first-run`` K to ``--runs`` N − 1."""
    return range(args.first_run, args.runs)


def mean_std(values: Sequence[float]) -> str:
    """"mean ± std" of ``values`` to 4 decimals (std 0 for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {spread:.4f}"


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (NaN with fewer than two pairs or no variation in the differences)."""
    differences = np.subtract(a, b)
    if len(a) < 2 or np.ptp(differences) <= 1e-12 * max(1.0, float(np.abs(differences).max())):
        return math.nan
    from scipy.stats import ttest_rel

    return float(ttest_rel(a, b).pvalue)


def _per_target(results: dict[tuple, dict[str, Any]], condition: tuple[str, str, str], pairs: list[tuple[int, int]],
                k: int) -> list[float]:
    """H@k of the (run, target index) ``pairs`` under ``condition`` = (dataset, attack, victim)."""
    d, at, v = condition
    return [results[(d, at, v, r)][f"per_target/hr@{k}"][j] for r, j in pairs]


@dataclass(frozen=True)
class Tables:
    """The ``table`` command's tables for the datasets, victims, attacks and runs of ``args``; results are keyed
    (dataset, attack, victim, run). Victims in ``changed`` (``--victim-set``) are not the paper's: no paper number."""

    args: argparse.Namespace
    changed: Collection[str] = ()

    def table(self, results: dict[tuple, dict[str, Any]],
              draws: dict[tuple, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Mean ± std over the runs of each run's measures (averaged over the victim's draws); with several draws also
        the victim's own spread: the std of H@10 over a run's draws, averaged over the runs."""
        a, rows = self.args, []
        for d in a.datasets:
            for v in a.victims:
                for at in a.attacks:
                    runs = [results[(d, at, v, r)] for r in measured_runs(a)]
                    row: dict[str, Any] = {"dataset": d, "victim": v, "attack": at}
                    for metric in ("hr", "ndcg"):
                        for k in KS:
                            row[f"{'H' if metric == 'hr' else 'N'}@{k}"] = mean_std([x[f"{metric}@{k}"] for x in runs])
                    if a.degree_filter or a.screen:
                        row["users dropped"] = statistics.fmean(x["dropped_users"] for x in runs)
                    if a.screen:
                        row["real users dropped"] = statistics.fmean(x["dropped_real_users"] for x in runs)
                    if a.victim_draws > 1:
                        row["H@10 draw std"] = statistics.fmean(
                            statistics.stdev(x["hr@10"] for x in draws[(d, at, v, r)]) for r in measured_runs(a))
                    comparison = self.compare(results, (d, at, v), "hr@10")
                    if comparison:
                        row["ΔH@10"] = f"{comparison[0]:+.4f} vs {comparison[1]}"
                        row["p (paired t)"] = comparison[2]
                    row["paper"] = "" if v in self.changed else PAPER.get((d, v, at), "")  # not the paper's victim
                    rows.append(row)
        return rows

    def compare(self, results: dict[tuple, dict[str, Any]], condition: tuple[str, str, str],
                metric: str) -> tuple[float, str, float] | None:
        """(mean difference, baseline, paired p) of ``metric`` under ``condition`` = (dataset, attack, victim) against
        its baseline over the runs: the wrapped attack for an attack with SharpAP (RevAdv for RevAdv+SharpAP), no attack
        for the others; None without one."""
        d, at, v = condition
        baseline = at.removesuffix(SHARP_SUFFIX) if at.endswith(SHARP_SUFFIX) else "none"
        if at == "none" or baseline not in self.args.attacks:
            return None
        mine = [results[(d, at, v, r)][metric] for r in measured_runs(self.args)]
        other = [results[(d, baseline, v, r)][metric] for r in measured_runs(self.args)]
        return statistics.fmean(mine) - statistics.fmean(other), baseline, paired_p(mine, other)

    def alternatives_table(self, results: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
        """The attack papers' own measures of the whole target set: RevAdv's TargetHR@K (share of users with at least
        one target in the top K) and GradientPassing's Recall@K, K = 10 and 50, each with its paired p-value."""
        a, rows = self.args, []
        for d in a.datasets:
            for v in a.victims:
                for at in a.attacks:
                    row: dict[str, Any] = {"dataset": d, "victim": v, "attack": at}
                    for metric, name in (("any_target_hr", "TargetHR"), ("target_recall", "Recall")):
                        for k in (10, 50):
                            key = f"{metric}@{k}"
                            row[f"{name}@{k}"] = mean_std([results[(d, at, v, r)][key] for r in measured_runs(a)])
                            comparison = self.compare(results, (d, at, v), key)
                            row[f"p {name}@{k}"] = comparison[2] if comparison else math.nan
                    rows.append(row)
        return rows

    def attack_table(self, cells: dict[tuple, Cell], made: dict[str, Any]) -> list[dict[str, Any]]:
        """Per attack cell: the surrogate's diagnostics, the fake users' size against the shortest real user's, and
        the cost."""
        rows = []
        for (d, at, r), cell in cells.items():
            result = made[cell.key]
            history = result["history"]
            profiles, floor = FakeProfiles.load(Path(result["profiles"])), cell_setting(cell.params)[1].real_floor()
            row: dict[str, Any] = {"dataset": d, "attack": at, "run": r,
                                   "targets": " ".join(map(str, result["targets"])),
                                   "fake users": result["num_fake"], "budget": result["budget"],
                                   "items per fake user": float(profiles.lists.lengths().mean()),
                                   "shortest real user": floor, "share below it": profiles.share_below(floor),
                                   "s/iteration": result["seconds_per_iteration"], "seconds": result["seconds"],
                                   "peak MiB": result["peak_mib"]}
            if history:
                scores = [h["surrogate_hr"] for h in history]
                row["surrogate H@50 (X₀)"], row["surrogate H@50 best"] = scores[0], max(scores)
                row["best t"] = scores.index(max(scores))
                cos = [h["cos_G"] for h in history if "cos_G" in h]
                if cos:
                    row["cos(G, G_sharp) mean"] = statistics.fmean(cos)
                    row["surrogate H@50 at θ+v (mean)"] = statistics.fmean(
                        h["surrogate_hr_perturbed"] for h in history if "surrogate_hr_perturbed" in h)
            rows.append(row)
        return rows

    def band_table(self, results: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-target H@10 / H@50 averaged over the (run, target) pairs of each popularity band; for an attack also
        H@50 over no attack's and how many of the band's targets it raised."""
        a, rows = self.args, []
        for d in a.datasets:
            dataset = load(d, a.data_dir)
            bands = {r: popularity_bands(dataset.train, dataset.num_items,
                                         setting(dataset, r, a.fake_share, a.target_band).targets)
                     for r in measured_runs(a)}
            for v in a.victims:
                for at in a.attacks:
                    for band, _ in BANDS:
                        pairs = [(r, j) for r in measured_runs(a) for j, name in enumerate(bands[r]) if name == band]
                        if not pairs:
                            continue
                        h50 = _per_target(results, (d, at, v), pairs, 50)
                        row: dict[str, Any] = {"dataset": d, "victim": v, "attack": at, "band": band,
                                               "targets": len(pairs),
                                               "H@10": statistics.fmean(_per_target(results, (d, at, v), pairs, 10)),
                                               "H@50": statistics.fmean(h50)}
                        if at != "none" and "none" in a.attacks:
                            clean = _per_target(results, (d, "none", v), pairs, 50)
                            clean_mean = statistics.fmean(clean)
                            row["H@50 / none"] = row["H@50"] / clean_mean if clean_mean > 0 else math.inf
                            row["raised"] = f"{sum(x > y for x, y in zip(h50, clean))}/{len(pairs)}"
                        rows.append(row)
        return rows

    def anatomy_table(self, results: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
        """Target H@20 beside the anatomy of the target scores (``recsys.score_anatomy``), means over the runs that
        measure each (a run whose fake users a defense dropped has no fake-user norm)."""
        a, rows = self.args, []
        for d in a.datasets:
            for v in a.victims:
                for at in a.attacks:
                    runs = [results[(d, at, v, r)] for r in measured_runs(a)]
                    row: dict[str, Any] = {"dataset": d, "victim": v, "attack": at,
                                           "H@20": statistics.fmean(x["hr@20"] for x in runs)}
                    for key, column in ANATOMY_COLUMNS.items():
                        if measured := [x[key] for x in runs if key in x]:
                            row[column] = statistics.fmean(measured)
                    rows.append(row)
        return rows

    def utility_table(self, results: dict[tuple, dict[str, Any]],
                      popular: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
        """Recall@20 / NDCG@20 of the popularity baseline (``popular``, per dataset and run, clean) and of every victim
        under every condition (``none``: clean)."""
        a, rows = self.args, []
        for d in a.datasets:
            runs = [popular[(d, r)] for r in measured_runs(a)]
            rows.append({"dataset": d, "model": "popularity", "attack": "none",
                         "Recall@20": mean_std([x["test/recall@20"] for x in runs]),
                         "NDCG@20": mean_std([x["test/ndcg@20"] for x in runs]), "s/epoch": 0.0})
            for v in a.victims:
                for at in a.attacks:
                    runs = [results[(d, at, v, r)] for r in measured_runs(a)]
                    rows.append({"dataset": d, "model": v, "attack": at,
                                 "Recall@20": mean_std([x["test/recall@20"] for x in runs]),
                                 "NDCG@20": mean_std([x["test/ndcg@20"] for x in runs]),
                                 "s/epoch": statistics.fmean(x["seconds_per_epoch"] for x in runs),
                                 "peak MiB": max(x["peak_mib"] for x in runs)})
        return rows


def mean_over_draws(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One run's victim measures over its draws: averaged (per-target lists element by element), the peak memory the
    largest."""
    def combine(key: str, values: list[Any]) -> Any:
        if isinstance(values[0], list):
            return [statistics.fmean(column) for column in zip(*values)]
        return max(values) if key == "peak_mib" else statistics.fmean(values)

    return {key: combine(key, [result[key] for result in results]) for key in results[0]}


def plot(rows: list[dict[str, Any]], path: Path, group: str = "victim", value: str = "H@10",
         label: str = "target H@10") -> None:
    """``value`` (a "mean ± std" column) per ``group`` (victim) and attack, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        block = [r for r in rows if r["dataset"] == d]
        groups = list(dict.fromkeys(r[group] for r in block))
        attacks = list(dict.fromkeys(r["attack"] for r in block))
        width = 0.8 / len(attacks)
        for j, at in enumerate(attacks):
            values = [float(next(r for r in block if r[group] == g and r["attack"] == at)[value].split(" ± ")[0])
                      for g in groups]
            ax.bar([i + j * width for i in range(len(groups))], values, width, label=at)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
        ax.set(title=d, ylabel=label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_iterates(rows: list[dict[str, Any]], path: Path) -> None:
    """Target H@50 against the outer iteration t: the surrogate's (both scores) and every victim's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (d, r) in dict.fromkeys((row["dataset"], row["run"]) for row in rows):
        block = [row for row in rows if row["dataset"] == d and row["run"] == r]
        for column in [c for c in block[0] if c.endswith("H@50") or c.startswith("surrogate")]:
            ax.plot([row["t"] for row in block], [row[column] for row in block], marker="o",
                    label=f"{d} run {r}: {column}")
    ax.set(xlabel="outer iteration t", ylabel="target H@50")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

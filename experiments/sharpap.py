"""SharpAP (sharpness-aware poisoning) on RevAdv against implicit-feedback victims, central mode.

    python -m experiments.sharpap table --datasets fed-ml gowalla --victims wrmf bpr lightgcn sgl simgcl \
        --attacks none random bandwagon revadv revadv+sharpap --runs 5 --workers 2 --data-dir ../shared/datasets

Two sweeps of cached cells (``harness.sweep``): fake profiles are generated once per dataset × attack × run
(``experiments.sharpap_cell.run_attack``), then every victim retrains from scratch on them (``run_victim``),
``--victim-draws`` times with its own seeds, the measures averaged over the draws; commands with the same ``--out``
reuse every finished cell, so ``--first-run K`` splits the runs of a sweep over invocations or machines. Writes
``table.csv``/``.md`` (mean ± std over runs, paired t-test p-values),
``alternatives.csv``/``.md`` (RevAdv's TargetHR@K and GradientPassing's Recall@K of the whole target set),
``attacks.csv``/``.md`` (surrogate diagnostics, the fake users' length against the shortest real user's, and cost),
``bands.csv``/``.md`` (per-target H@10 / H@50 by the targets' popularity band), ``utility.csv``/``.md`` (Recall@20
and NDCG@20, clean and under each attack, beside the popularity baseline), with ``--anatomy`` ``anatomy.csv``/``.md`` (the targets' norms
and cosines against each user's 20th item, ``recsys.score_anatomy``) and ``table.png`` into ``--out``, and prints them
with the paper's numbers.

    python -m experiments.sharpap iterates --datasets fed-ml --runs 1 --victims wrmf --iterates 0 1 2 5 10 20 30

follows RevAdv's outer loop (the ``table`` command's attack cell: same preset, targets, X₀ and seeds) and keeps the
iterates X_t; writes ``iterates.csv``/``.md``/``.png``: each X_t's fake-user size, its surrogate H@50 as the loop
scored it and as a surrogate fitted from scratch scores it, and the target H@10 / H@50 of every victim retrained on it.

    python -m experiments.sharpap stealth --datasets fed-ml --runs 5 --attacks random targets-only revadv

runs (or reads) the ``table`` command's attack cells and scores every attack's fake users with each detector of
``defenses.profile_detectors`` and the supervised one (``defenses.supervised_detector``, fitted on the Random and
Bandwagon fake users the platform injects itself; cached ``stealth-…`` cells, no victim trains); writes
``stealth.csv``/``.md``/``.png``: per detector and attack the ROC AUC against the real users and the share caught at
1 % of the real users; ``--detectors`` scores some of the detectors only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch

from attacks.implicit import ATTACKS, GRADIENT_ATTACKS, SHARP_SUFFIX, SURROGATE_PRESETS
from attacks.implicit.revadv import RevAdvSettings
from attacks.implicit.sharpap import MODES, SharpSettings
from defenses.profile_detectors import FALSE_POSITIVE_RATE
from experiments.sharpap_cell import (ANATOMY, FAKE_SHARE, KNOWN_ATTACKS, KNOWN_INJECTED, STEALTH_DETECTORS, SUPERVISED,
                                      TARGET_BANDS, UNIFORM, VICTIM_MEASURES, load, popularity, run_attack,
                                      run_iterates, run_stealth, run_victim)
from experiments.sharpap_tables import Tables, mean_over_draws, mean_std, measured_runs, plot, plot_iterates
from experiments.sharpap_victims import (VICTIM_CHOICES, VICTIM_DIM, VICTIM_PRESETS, VICTIMS, overridden,
                                         victim_overrides)
from harness.cli import CommandParser, UsageError, add_common, add_list, check_choices, guarded, parse
from harness.sweep import Cell, run_sweep
from harness.tables import markdown_table, write_table

# fed-ml = ML-1M implicit; gowalla = a seeded CPU subsample; gowalla-full = the whole split; amazon-book = the
# whole LightGCN split (files given by the user); synthetic = CI size
DATASETS = ("fed-ml", "gowalla", "gowalla-full", "amazon-book", "synthetic")
CONDITIONS = ("none", *ATTACKS)
DEFAULT_CONDITIONS = ("none", "random", "bandwagon", "revadv", "revadv+sharpap")  # the issue's; + rapu, dada (+sharpap)
ITERATES = (0, 1, 2, 5, 10, 20, 30)  # the iterates command's default outer iterations

class Experiment:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        preset = SURROGATE_PRESETS[args.surrogate][args.preset]
        surrogate, revadv = preset.surrogate, preset.revadv
        if args.iterations is not None:
            revadv = RevAdvSettings(**{**asdict(revadv), "iterations": args.iterations})
        self.options = {"surrogate": asdict(surrogate), "revadv": asdict(revadv),
                        "sharp": asdict(SharpSettings(kappa=args.kappa, mode=args.sharp_mode))}
        self.victim_preset = args.victim_preset or args.preset
        self.changes = victim_overrides(args.victim_set)
        self.victim_settings = {victim: overridden(training, self.changes.get(victim, {}))
                                for victim, training in VICTIM_PRESETS[self.victim_preset].items()}
        wmf = args.surrogate == "wmf"  # cells of the WMF surrogate keep their keys and parameters
        self.surrogate = {} if wmf else {"surrogate_name": args.surrogate}
        self.surrogate_tag = "" if wmf else f"-{args.surrogate}"
        default = args.fake_share == FAKE_SHARE  # cells of the default share keep their keys and parameters
        self.share = {} if default else {"fake_share": args.fake_share}
        self.share_tag = "" if default else f"-n{args.fake_share}"
        uniform = args.target_band == UNIFORM  # cells of uniform targets keep their keys and parameters
        self.band = {} if uniform else {"target_band": args.target_band}
        self.band_tag = "" if uniform else f"-t{args.target_band}"
        self.dim = VICTIM_DIM[self.victim_preset]
        on_cpu = args.device == "cpu"  # CPU cells keep their keys and parameters
        self.device = {} if on_cpu else {"device": args.device}
        self.device_tag = "" if on_cpu else f"-{args.device}"
        self.screen = sorted(set(args.screen))  # one cell key per set of detectors, in any order
        known = sorted(set(args.known_attacks))  # cells of the default known attacks keep their keys and parameters
        self.known = {} if set(known) == set(KNOWN_ATTACKS) else {"known_attacks": known}
        self.known_gradient = [attack for attack in known if attack in GRADIENT_ATTACKS]
        self.known_tag = f"-known-{'-'.join(known)}{self.settings_tag(self.known_gradient)}" if self.known else ""
        # the stealth command's detectors, in the order of STEALTH_DETECTORS; cells of all of them keep their keys
        self.detectors = [name for name in STEALTH_DETECTORS if name in args.detectors]
        every = self.detectors == list(STEALTH_DETECTORS)
        self.detectors_tag = "" if every else f"-detectors-{'-'.join(self.detectors)}"

    def settings_tag(self, attacks: Sequence[str]) -> str:
        """The key tag of the gradient attacks' settings where ``attacks`` holds one (and of SharpAP's where it holds
        one with SharpAP); the heuristics' cells do not depend on them."""
        gradient = any(attack in GRADIENT_ATTACKS for attack in attacks)
        sharp = any(attack.endswith(SHARP_SUFFIX) for attack in attacks)
        return ((f"{self.surrogate_tag}-{self.args.preset}-i{self.options['revadv']['iterations']}" if gradient else "")
                + (f"-k{self.args.kappa}-{self.args.sharp_mode}" if sharp else ""))

    def attack_cell(self, dataset: str, attack: str, run: int) -> Cell:
        gradient = attack in GRADIENT_ATTACKS
        params = {"dataset": dataset, "data_dir": self.args.data_dir, "attack": attack, "run": run,
                  "threads": self.args.threads, **(self.options | self.surrogate if gradient else {}), **self.band,
                  **self.share, **self.device}
        tags = f"{self.band_tag}{self.share_tag}{self.device_tag}"
        return Cell(f"attack-{dataset}-{attack}{self.settings_tag([attack])}{tags}-r{run}", params)

    def victim_cell(self, dataset: str, victim: str, source: str | None, run: int, profiles: str | None,
                    draw: int = 0) -> Cell:
        """The victim retrained (seed ``draw`` of the run) on the ``profiles`` named ``source`` (an attack cell's key
        without ``attack-``; None: no attack)."""
        training = self.victim_settings[victim]
        decay = {"weight_decay": training.weight_decay} if training.weight_decay else {}
        params = {"dataset": dataset, "data_dir": self.args.data_dir, "victim": victim, "run": run,
                  "threads": self.args.threads, "dim": training.dim or self.dim, "profiles": profiles,
                  "measures": [*VICTIM_MEASURES, *([ANATOMY] if self.args.anatomy else [])],
                  "train": {"epochs": training.epochs, "lr": training.lr, "batch_size": training.batch, **decay},
                  **self.band, **self.share, **self.device,
                  **({"options": training.options} if training.options else {}), **({"draw": draw} if draw else {}),
                  **({"degree_filter": True} if self.args.degree_filter else {}),
                  **({"screen": self.screen, **self.screen_known(dataset, run)} if self.screen else {})}
        source = source or f"{dataset}-none{self.band_tag}{self.share_tag}-r{run}"
        preset = VICTIM_PRESETS[self.victim_preset][victim]  # a preset's own settings keep their keys
        changed = "".join(f"-{name}{getattr(training, name)}" for name in ("lr", "batch", "weight_decay")
                          if getattr(training, name) != getattr(preset, name))
        tag = changed + "".join(f"-{k}{v}" for k, v in training.options.items()) + (
            f"-d{training.dim}" if training.dim else "")
        draw_tag = f"-v{draw}" if draw else ""  # draw 0 keeps the single-draw key
        anatomy_tag = f"-{ANATOMY}" if self.args.anatomy else ""  # cells without the anatomy keep theirs
        filter_tag = ("-degree-filter" if self.args.degree_filter else "") + (
            f"-screen-{'-'.join(self.screen)}{self.known_tag if self.screen_known(dataset, run) else ''}"
            if self.screen else "")
        return Cell(f"victim-{victim}-e{training.epochs}{tag}{self.device_tag}-{source}{draw_tag}{anatomy_tag}"
                    f"{filter_tag}", params)

    def screen_known(self, dataset: str, run: int) -> dict[str, Any]:
        """The known attacks of the screen's supervised detectors and their profiles (``known_made``; none where the
        screen has no such detector)."""
        return self.known_made(dataset, run) if set(self.screen) & set(SUPERVISED) else {}

    def known_made(self, dataset: str, run: int) -> dict[str, Any]:
        """What a cell of ``run`` needs to fit the supervised detectors: the known attacks (where not the default
        ones), the profiles files of the known gradient attacks, made by their attack cells at run −1 − r (targets
        and seeds no measured run uses; the heuristics' fake users are made with the detector), and how they are
        injected (``KNOWN_INJECTED``, read by no code: it keeps cells of the earlier labelling from being reused)."""
        made = self.known_profiles[dataset, run] if self.known_gradient else {}
        return {**self.known, **({"known_profiles": made} if made else {}), "known_injected": KNOWN_INJECTED}

    @cached_property
    def known_profiles(self) -> dict[tuple[str, int], dict[str, str]]:
        """Per (dataset, run): the profiles file of every known gradient attack, its run −1 − r attack cell run (or
        read) on first use."""
        a = self.args
        cells = {(d, at, r): self.attack_cell(d, at, -1 - r)
                 for d in a.datasets for at in self.known_gradient for r in measured_runs(a)}
        made = run_sweep(list(cells.values()), run_attack, self.out, workers=a.workers, **self.gpus())
        return {(d, r): {at: made[cells[d, at, r].key]["profiles"] for at in self.known_gradient}
                for d in a.datasets for r in measured_runs(a)}

    def gpus(self) -> dict[str, float]:
        return {"gpus_per_cell": self.args.gpus_per_cell if self.args.device == "cuda" else 0.0}

    def attack_sweep(self) -> tuple[dict[tuple, Cell], dict[str, Any]]:
        """Every attack's cell per dataset and run (no attack has none) and their results, run where not cached."""
        a = self.args
        attacks = {(d, at, r): self.attack_cell(d, at, r) for d in a.datasets for at in a.attacks if at != "none"
                   for r in measured_runs(a)}
        return attacks, run_sweep(list(attacks.values()), run_attack, self.out, workers=a.workers, **self.gpus())

    def run(self) -> dict[str, list[dict[str, Any]]]:
        """The tables ``table``, ``alternatives``, ``attacks``, ``bands`` and ``utility`` (and ``anatomy``)."""
        a = self.args
        attacks, made = self.attack_sweep()
        victims = {}
        for d in a.datasets:
            for at in a.attacks:
                for r in measured_runs(a):
                    cell = attacks.get((d, at, r))
                    for v in a.victims:
                        for draw in range(a.victim_draws):
                            victims[(d, at, v, r, draw)] = self.victim_cell(
                                d, v, cell.key[len("attack-"):] if cell else None, r,
                                made[cell.key]["profiles"] if cell else None, draw)
        measured = run_sweep(list(victims.values()), run_victim, self.out, workers=a.workers, **self.gpus())
        baselines = {(d, r): Cell(self.popularity_key(d, r),
                                  {"dataset": d, "data_dir": a.data_dir, "run": r, **self.band})
                     for d in a.datasets for r in measured_runs(a)}
        scored = run_sweep(list(baselines.values()), popularity, self.out, progress=False)
        popular = {key: scored[cell.key] for key, cell in baselines.items()}
        draws = {}
        for (d, at, v, r, _), cell in victims.items():
            draws.setdefault((d, at, v, r), []).append(measured[cell.key])
        results = {key: mean_over_draws(cells) for key, cells in draws.items()}
        build = Tables(a, changed=set(self.changes))
        tables = {"table": build.table(results, draws), "alternatives": build.alternatives_table(results),
                  "attacks": build.attack_table(attacks, made), "bands": build.band_table(results),
                  "utility": build.utility_table(results, popular)}
        return tables | ({"anatomy": build.anatomy_table(results)} if a.anatomy else {})

    def stealth(self) -> dict[str, list[dict[str, Any]]]:
        """The ``stealth`` table: how well each detector of ``defenses.profile_detectors`` sets every attack's fake
        users apart from the real users (ROC AUC, share caught at 1 % of the real), mean ± std over the runs."""
        a, rows = self.args, []
        attacks, made = self.attack_sweep()
        cells = {(d, at, r): Cell("stealth-" + cell.key[len("attack-"):] + self.known_tag + self.detectors_tag,
                                  {**cell.params, "profiles": made[cell.key]["profiles"],
                                   "detectors": self.detectors, **self.known_made(d, r)})
                 for (d, at, r), cell in attacks.items()}
        # run-major, so a worker fits each run's supervised detectors once (``known_attack_detector``'s cache)
        ordered = [cells[key] for key in sorted(cells, key=lambda key: (a.datasets.index(key[0]), key[2]))]
        measured = run_sweep(ordered, run_stealth, self.out, workers=a.workers)
        for d in a.datasets:
            for detector in self.detectors:
                for at in [name for name in a.attacks if name != "none"]:
                    runs = [measured[cells[(d, at, r)].key][detector] for r in measured_runs(a)]
                    rows.append({"dataset": d, "detector": detector, "attack": at,
                                 "AUC": mean_std([x["auc"] for x in runs]),
                                 f"caught at {FALSE_POSITIVE_RATE:.0%} of the real":
                                     mean_std([x["caught"] for x in runs])})
        return {"stealth": rows}

    def iterates(self) -> dict[str, list[dict[str, Any]]]:
        """The ``iterates`` table: RevAdv's iterates X_t (``--iterates``) of every dataset and run, each scored by the
        loop's surrogate and by one fitted from scratch, and every victim retrained on it."""
        a, rows = self.args, []
        kept = sorted({t for t in a.iterates if t <= self.options["revadv"]["iterations"]})
        cells = {}
        for d in a.datasets:
            for r in measured_runs(a):
                attack = self.attack_cell(d, "revadv", r)
                cells[(d, r)] = Cell("iterates-" + attack.key[len("attack-"):], {**attack.params, "iterates": kept})
        made = run_sweep(list(cells.values()), run_iterates, self.out, workers=a.workers)
        victims = {}
        for (d, r), cell in cells.items():
            for x in made[cell.key]["iterates"]:
                source = f"{cell.key[len('iterates-'):]}-x{x['iteration']}"
                for v in a.victims:
                    victims[(d, r, x["iteration"], v)] = self.victim_cell(d, v, source, r, x["profiles"])
        measured = run_sweep(list(victims.values()), run_victim, self.out, workers=a.workers)
        for (d, r), cell in cells.items():
            for x in made[cell.key]["iterates"]:
                row: dict[str, Any] = {"dataset": d, "run": r, "t": x["iteration"],
                                       "items per fake user": x["items_per_fake"],
                                       "surrogate H@50 (loop)": x["loop_surrogate_hr"],
                                       "surrogate H@50 (from scratch)": x["fresh_surrogate_hr"]}
                for v in a.victims:
                    result = measured[victims[(d, r, x["iteration"], v)].key]
                    row[f"{v} H@10"], row[f"{v} H@50"] = result["hr@10"], result["hr@50"]
                rows.append(row)
        return {"iterates": rows}

    def popularity_key(self, dataset: str, run: int) -> str:
        return f"popularity-{dataset}{self.band_tag}-r{run}"

def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m experiments.sharpap", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["table", "iterates", "stealth"],
                        help="table: every attack against every victim; iterates: RevAdv's outer-loop iterates, each "
                             "scored by the surrogate and retrained on by the victims; stealth: how well unsupervised "
                             "detectors set every attack's fake users apart from the real users (no victim trains)")
    add_common(parser, out="runs/sharpap", seeds=None, datasets=["fed-ml"])
    add_list(parser, "--victims", str, "names", list(VICTIMS), f"victims ({', '.join(VICTIM_CHOICES)}; default: "
             f"{' '.join(VICTIMS)})")
    add_list(parser, "--attacks", str, "names", list(DEFAULT_CONDITIONS), f"attacks ({', '.join(CONDITIONS)}; default: "
             f"{' '.join(DEFAULT_CONDITIONS)})")
    parser.add_argument("--runs", type=int, default=5, help="runs 0..N-1 (each its own targets and seeds)")
    parser.add_argument("--first-run", type=int, default=0,
                        help="measure runs K..N-1 of --runs N only (default 0), e.g. to split a sweep over "
                             "invocations or machines that share --out's cells")
    parser.add_argument("--preset", choices=VICTIM_PRESETS, default="lean",
                        help="hyper-parameter preset (default lean)")
    parser.add_argument("--victim-preset", choices=VICTIM_PRESETS, default=None,
                        help="train the victims at this preset's settings (default: --preset's), e.g. the paper "
                             "preset's attacks against the lean preset's victims")
    parser.add_argument("--surrogate", choices=SURROGATE_PRESETS, default="wmf",
                        help="the gradient attacks' surrogate: wmf (Adam, unrolled; default) or wmf-als (ALS, "
                             "differentiated through its last item solve, RevAdv's cheaper variant)")
    parser.add_argument("--iterations", type=int, default=None, help="override RevAdv's outer iterations")
    parser.add_argument("--fake-share", type=float, default=FAKE_SHARE,
                        help="fake users as a share of the real users (default 0.01, the paper's 1%%)")
    parser.add_argument("--target-band", choices=TARGET_BANDS, default=UNIFORM,
                        help="draw each run's 5 targets among all items (uniform, default) or within one popularity "
                             "band of the training counts (RevAdv's target groups)")
    add_list(parser, "--iterates", int, "integers", list(ITERATES),
             "with the iterates command: the outer iterations t whose X_t is kept (those beyond the preset's "
             "outer iterations are left out)")
    parser.add_argument("--kappa", type=float, default=SharpSettings.kappa, help="SharpAP radius κ (relative)")
    parser.add_argument("--sharp-mode", choices=MODES, default=SharpSettings.mode, help="SharpAP perturbation")
    parser.add_argument("--victim-draws", type=int, default=1,
                        help="with the table command: train each victim this many times per run (its own seeds), "
                             "measures averaged over the draws before the runs' mean and paired t-test (default 1)")
    add_list(parser, "--victim-set", str, "entries", [],
             "change a victim's training (VICTIM.epochs|lr|batch|weight_decay|dim=VALUE) or a hyper-parameter of its "
             "model (e.g. simgcl.ssl_weight=0, lightgcn.include_ego=false); changed victims get their own cells",
             empty="none")
    parser.add_argument("--anatomy", action="store_true",
                        help="with the table command: also measure the anatomy of the target scores "
                             "(recsys.score_anatomy; norms and cosines against each user's 20th item), written to "
                             "anatomy.csv/.md; these victim cells get their own keys")
    parser.add_argument("--degree-filter", action="store_true",
                        help="train every victim after dropping the users shorter than the shortest real user "
                             "(defenses.degree_filter: no real user, the fake users a filter on the number of "
                             "interactions catches); these victim cells get their own keys")
    add_list(parser, "--screen", str, "detectors", [],
             f"train every victim after dropping the users any of these detectors ({', '.join(STEALTH_DETECTORS)}) "
             "scores above 99%% of the clean data's users (defenses.detector_screen; supervised...: fitted on the "
             "fake users of --known-attacks the platform injects, defenses.supervised_detector, on all at once or "
             "one per attack; real users go too, and the measures cover the real users kept); these victim cells get "
             "their own keys",
             empty="none")
    add_list(parser, "--known-attacks", str, "attacks", list(KNOWN_ATTACKS),
             f"the attacks ({', '.join(ATTACKS)}) whose fake users the supervised detectors are fitted on, made "
             "at other targets and seeds than any measured run's (run -1 - r's; a gradient attack's by its own "
             "attack cell at that run, with the gradient attacks' settings); stealth command or --screen "
             "supervised...; other sets than the default get their own cells")
    add_list(parser, "--detectors", str, "detectors", list(STEALTH_DETECTORS),
             "with the stealth command: the detectors scored (default all); other sets than all get their own cells")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the surrogate and the victims train (default cpu; cuda cells get their own keys)")
    parser.add_argument("--gpus-per-cell", type=float, default=1.0,
                        help="with --device cuda and --workers > 1: GPUs (or a share of one) per Ray worker")
    return parser


@guarded()
def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    check_choices("--datasets", args.datasets, DATASETS)
    check_choices("--victims", args.victims, VICTIM_CHOICES)
    check_choices("--attacks", args.attacks, CONDITIONS)
    check_choices("--screen", args.screen, STEALTH_DETECTORS)
    check_choices("--known-attacks", args.known_attacks, tuple(ATTACKS))
    check_choices("--detectors", args.detectors, STEALTH_DETECTORS)
    if min(args.runs, args.threads, args.victim_draws) < 1 or args.kappa < 0 or not 0 < args.fake_share <= 1:
        raise UsageError("--runs, --threads and --victim-draws must be >= 1, --kappa >= 0 and --fake-share in (0, 1]")
    if not 0 <= args.first_run < args.runs:
        raise UsageError(f"--first-run must be in 0..{args.runs - 1}: --runs {args.runs} covers runs "
                         f"0..{args.runs - 1}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu")
    if not 0 < args.gpus_per_cell <= 1:
        raise UsageError("--gpus-per-cell must be in (0, 1]")
    if args.iterations is not None and args.iterations < 0:
        raise UsageError("--iterations must be >= 0")
    if any(t < 0 for t in args.iterates):
        raise UsageError("--iterates must be >= 0")
    if args.degree_filter and args.screen:
        raise UsageError("--degree-filter and --screen are two defenses: name one")
    if not args.known_attacks:
        raise UsageError("--known-attacks: name at least one attack for the supervised detectors to learn from")
    supervised_screen = set(args.screen) & set(SUPERVISED)
    if set(args.known_attacks) != set(KNOWN_ATTACKS) and args.command != "stealth" and not supervised_screen:
        raise UsageError("--known-attacks goes with the stealth command or a --screen naming "
                         f"{' or '.join(SUPERVISED)}")
    if not args.detectors:
        raise UsageError("--detectors: name at least one detector for the stealth command to score")
    if set(args.detectors) != set(STEALTH_DETECTORS) and args.command != "stealth":
        raise UsageError("--detectors goes with the stealth command (the table command's defense is --screen)")
    if args.anatomy and args.command != "table":
        raise UsageError("--anatomy goes with the table command")
    if args.command == "stealth" and set(args.attacks) <= {"none"}:
        raise UsageError("the stealth command scores fake users: name an attack other than none in --attacks")
    experiment = Experiment(args)
    for dataset in args.datasets:  # missing or malformed data fails here, in one line, before any run
        load(dataset, args.data_dir)
    tables = {"table": experiment.run, "iterates": experiment.iterates, "stealth": experiment.stealth}[args.command]()
    out = Path(args.out)
    draws = f", each victim's measures averaged over {args.victim_draws} draws" if args.victim_draws > 1 else ""
    runs = measured_runs(args)
    over = (f"{len(runs)} runs" if not runs.start else f"run {runs.start}" if len(runs) == 1
            else f"runs {runs.start}–{runs.stop - 1}")
    presets = (f"{args.preset} preset" if experiment.victim_preset == args.preset
               else f"{args.preset} preset's attacks, {experiment.victim_preset} preset's victims")
    presets += f"; {' '.join(args.victim_set)}" if args.victim_set else ""
    presets += "; users shorter than the shortest real user dropped before training" if args.degree_filter else ""
    presets += f"; users flagged by {' or '.join(experiment.screen)} dropped before training" if args.screen else ""
    titles = {"table": f"Target promotion (mean ± std over {over}{draws}, {presets})",
              "iterates": "RevAdv's iterates X_t: surrogate H@50 as the loop scores them (warm-started fits) and "
                          "from scratch, and the target H@10 / H@50 of every victim retrained on them",
              "alternatives": "The whole target set, as RevAdv (TargetHR@K: users with >= 1 target in the top K) and "
                              "GradientPassing (Recall@K of the targets outside a user's training list) measure it; "
                              "p: paired t-test against no attack (an attack with SharpAP: against the attack without)",
              "attacks": "Attacks: surrogate diagnostics, fake-user length and cost",
              "bands": "Target promotion by the targets' popularity band (mean over runs and targets)",
              "utility": "Utility on the test split, clean (attack none) and with each attack's fake users",
              "anatomy": "Anatomy of the target scores r_ut = |p_u| |q_t| cos(p_u, q_t) against each real user's 20th "
                         "item k (means over runs; recsys.score_anatomy)",
              "stealth": f"Detectors of the fake users (defenses.profile_detectors; mean ± std over {over}): "
                         "ROC AUC against the real users (below 0.5: the fake users sit at the other end) and the "
                         "share of fake users scored above all but the most suspicious 1 % of the real users"}
    for name, rows in tables.items():
        write_table(rows, out / name, title=titles[name])
        print(markdown_table(rows))
    figure, draw = {"table": ("table", plot), "iterates": ("iterates", plot_iterates),
                    "stealth": ("stealth", partial(plot, group="detector", value="AUC", label="ROC AUC"))}[args.command]
    draw(tables[figure], out / f"{figure}.png")
    print(f"wrote {out}/{figure}.png and " + ", ".join(f"{name}.csv, .md" for name in tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

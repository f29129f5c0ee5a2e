"""Cells of the SharpAP experiment: the data of a run (dataset, targets, fake-user budget), the
attack cell (fake profiles generated once per dataset × attack × run) and the victim cell (a
victim retrained from scratch on real + fake users, then measured)."""

from __future__ import annotations

import resource
import time
import zlib
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.implicit import GRADIENT_ATTACKS, AttackOptions, FakeProfiles, PoisonSetting, generate, gradient_attack
from attacks.implicit.revadv import RevAdvSettings
from attacks.implicit.sharpap import SharpSettings
from attacks.implicit.options import make_surrogate, settings_type
from central.ranking_learner import TrainSettings, train_native
from defenses.degree_filter import long_enough_users
from defenses.detector_screen import screened_users
from defenses.profile_detectors import DETECTORS, Detector, separation
from defenses.graph_network_detector import fit_graph_network_each, fit_graph_network_joint
from defenses.supervised_detector import (Learn, features, fit_each, fit_joint, fit_logistic, fit_perceptron,
                                          graph_features)
from recsys.data import Dataset, Interactions, load_dataset
from recsys.models.ranking import make_model
from recsys.promotion_metrics import BANDS, PopularityScorer, popularity_bands, promotion, utility
from recsys.score_anatomy import score_anatomy

NUM_TARGETS = 5
FAKE_SHARE = 0.01  # n_f = 1% of the real users
SYNTHETIC = {"num_users": 300, "num_items": 200, "mean_items_per_user": 20, "seed": 0}
GOWALLA_CPU = {"users": 6000, "items": 5000}  # seeded CPU-feasible subsample (see docs/sharpap.md)
UNIFORM = "uniform"  # targets drawn among all items with a training interaction (the spec's default)
# What a victim cell measures (part of its parameters, so a cell stored with fewer measures is recomputed):
# per-target H@K / N@K, RevAdv's TargetHR@K (>= 1 target), GradientPassing's Recall@K, clean utility.
VICTIM_MEASURES = ("per-target", "any-target", "target-recall", "utility")
ANATOMY = "anatomy"  # the further measure of ``--anatomy`` cells: recsys.score_anatomy
# the detectors fitted on the attacks the platform knows: each learns (from the clean training data, the data with
# each known attack alone injected, and the number of items) a detector. The regressions and the perceptron
# (``supervised_detector``) describe a user by its scores (or also their two-hop means: SGC's and SIGN's fixed
# propagation), one fitted on all known attacks' fake users or one per attack (the most suspicious score counts);
# the graph neural network (``graph_network_detector``) learns its messages before propagating them
SUPERVISED: dict[str, Learn] = {
    "supervised": partial(fit_joint, describe=features, fit=fit_logistic),
    "supervised-graph": partial(fit_joint, describe=graph_features, fit=fit_logistic),
    "supervised-per-attack": partial(fit_each, describe=features, fit=fit_logistic),
    "supervised-graph-per-attack": partial(fit_each, describe=graph_features, fit=fit_logistic),
    "supervised-graph-mlp": partial(fit_joint, describe=graph_features, fit=fit_perceptron),
    "supervised-graph-mlp-per-attack": partial(fit_each, describe=graph_features, fit=fit_perceptron),
    "supervised-gnn": fit_graph_network_joint, "supervised-gnn-per-attack": fit_graph_network_each}
KNOWN_ATTACKS = ("random", "bandwagon")  # the attacks the platform knows unless a cell's "known_attacks" says others
# How the supervised detectors' labelled data is made: part of the params of every cell that fits one, so cells stored
# when the known attacks were injected together are recomputed (``fit_joint``)
KNOWN_INJECTED = "each alone"
STEALTH_DETECTORS = (*DETECTORS, *SUPERVISED)


def band_option(band: str) -> str:
    """A popularity band's name as a command-line choice (``upper torso`` -> ``upper-torso``)."""
    return band.replace(" ", "-")


TARGET_BANDS = (UNIFORM, *(band_option(name) for name, _ in BANDS))  # or within one popularity band (RevAdv)


def cpu_gowalla(dataset: Dataset, users: int, items: int, seed: int = 0) -> Dataset:
    """``users`` random users (seeded) restricted to their ``items`` most popular items; users left
    with fewer than 5 train or no test items are dropped; ids renumbered densely."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(dataset.num_users, min(users, dataset.num_users), replace=False))
    train, test = dataset.train.subset(chosen), dataset.test.subset(chosen)
    counts = np.bincount(train.items, minlength=dataset.num_items)
    kept = np.sort(np.argsort(-counts, kind="stable")[:items])
    new_id = np.full(dataset.num_items, -1)
    new_id[kept] = np.arange(len(kept))

    def restrict(part: Interactions) -> Interactions:
        ids = new_id[part.items]
        return Interactions.from_pairs(part.row_ids()[ids >= 0], ids[ids >= 0], part.num_users)

    train, test = restrict(train), restrict(test)
    good = np.flatnonzero((train.lengths() >= 5) & (test.lengths() > 0))
    note = f"CPU subsample of gowalla: {len(chosen)} random users (seed {seed}), top {items} items"
    return Dataset("gowalla-cpu", len(good), len(kept), train.subset(good), test.subset(good), notes=(note,))


@lru_cache(maxsize=4)
def load(name: str, data_dir: str | None) -> Dataset:
    """The dataset of a run: ``fed-ml`` (ML-1M implicit), ``gowalla`` (CPU subsample), ``gowalla-full`` (the
    whole LightGCN split, 29,858 x 40,981), ``amazon-book`` (the whole LightGCN split) or ``synthetic``;
    ``data_dir`` "" or None means ``$FEDREC_DATA_DIR``, else the cache."""
    if name == "synthetic":
        return load_dataset("synthetic", **SYNTHETIC)
    if name == "gowalla":
        return cpu_gowalla(load_dataset("gowalla", data_dir or None), **GOWALLA_CPU)
    if name == "gowalla-full":
        return load_dataset("gowalla", data_dir or None)
    return load_dataset(name, data_dir or None)


def setting(dataset: Dataset, run: int, fake_share: float = FAKE_SHARE, band: str = UNIFORM) -> PoisonSetting:
    """Run ``run``'s targets (5 items drawn uniformly among the items with a training interaction, or,
    with ``band`` one of ``TARGET_BANDS`` but uniform, among those of that popularity band: RevAdv's
    target groups), n_f = ``fake_share`` of the users (1%) and the budget = the mean real-user training
    degree (targets included)."""
    if band not in TARGET_BANDS:
        raise ValueError(f"target band must be one of {', '.join(TARGET_BANDS)}, got {band!r}")
    present = np.flatnonzero(np.bincount(dataset.train.items, minlength=dataset.num_items) > 0)
    stream = f"targets/{dataset.name}/{run}"
    if band != UNIFORM:
        names = np.array([band_option(name) for name in popularity_bands(dataset.train, dataset.num_items, present)])
        present, stream = present[names == band], f"targets/{dataset.name}/{band}/{run}"
        if len(present) < NUM_TARGETS:
            raise ValueError(f"{dataset.name}: the {band} band holds {len(present)} items, fewer than the "
                             f"{NUM_TARGETS} targets of a run; choose another --target-band")
    rng = np.random.default_rng(zlib.crc32(stream.encode()))
    targets = np.sort(rng.choice(present, NUM_TARGETS, replace=False))
    num_fake = max(1, round(fake_share * dataset.num_users))
    budget = max(NUM_TARGETS + 1, round(dataset.train.nnz / dataset.num_users))
    return PoisonSetting(dataset.train, dataset.num_items, targets, num_fake, budget)


def cell_setting(params: dict[str, Any]) -> tuple[Dataset, PoisonSetting]:
    """The dataset and the poisoning setting named by a cell's ``params``."""
    dataset = load(params["dataset"], params["data_dir"])
    return dataset, setting(dataset, params["run"], params.get("fake_share", FAKE_SHARE),
                            params.get("target_band", UNIFORM))


def attack_options(params: dict[str, Any]) -> AttackOptions:
    """The gradient attacks' settings named by an attack cell's ``params`` (the heuristics' cells name none)."""
    if "surrogate" not in params:
        return AttackOptions()
    surrogate = settings_type(params.get("surrogate_name", "wmf"))(**params["surrogate"])
    return AttackOptions(surrogate, RevAdvSettings(**params["revadv"]),
                         SharpSettings(**params["sharp"]), device=params.get("device", "cpu"))


def use_threads(threads: int, device: str = "cpu") -> None:
    """``threads`` torch threads. With several on the CPU, deterministic algorithms too: the backward pass of a row
    gather (an embedding lookup) otherwise adds repeated rows in thread order, so the same cell gave other numbers
    on every run; the deterministic one was also faster there (a BPR-MF epoch on ML-1M at two threads: 0.56–0.59 s
    against 1.14–1.16 s). CUDA keeps its defaults."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(threads > 1 and device == "cpu")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_attack(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Attack cell: generate the fake profiles of ``params["attack"]`` and save them in ``folder``."""
    use_threads(params.get("threads", 1), params.get("device", "cpu"))
    start = time.perf_counter()
    _, poison = cell_setting(params)
    profiles, history = generate(params["attack"], poison, attack_options(params), params["run"])
    path = folder / "profiles.npz"
    profiles.save(path)
    iterations = [row["seconds"] for row in history[1:-1]]
    return {"profiles": str(path), "targets": poison.targets.tolist(), "num_fake": poison.num_fake,
            "budget": poison.budget, "history": history, "seconds": time.perf_counter() - start,
            "seconds_per_iteration": float(np.mean(iterations)) if iterations else 0.0, "peak_mib": _peak_mib()}


def run_iterates(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Iterates cell: RevAdv's loop as in its attack cell; saves the iterates X_t, t in ``params["iterates"]``, in
    ``folder`` with the surrogate's H@50 as the loop scored them and as a surrogate fitted from scratch scores them."""
    use_threads(params.get("threads", 1), params.get("device", "cpu"))
    _, poison = cell_setting(params)
    options, wanted, rows = attack_options(params), set(params["iterates"]), []

    def keep(row: dict[str, Any], fake: torch.Tensor) -> None:
        if row["iteration"] not in wanted:
            return
        path = folder / f"iterate-{row['iteration']}.npz"
        FakeProfiles.from_matrix(fake, poison.budget).save(path)
        fresh = make_surrogate(poison, options, params["run"])
        rows.append({"iteration": row["iteration"], "profiles": str(path), "items_per_fake": float(fake.sum(1).mean()),
                     "loop_surrogate_hr": row["surrogate_hr"],
                     "fresh_surrogate_hr": fresh.target_hit_ratio(fresh.fit(fake, differentiable=False).theta)})

    gradient_attack(poison, options, params["run"], sharp=False, on_iteration=keep)
    return {"iterates": rows}


def run_victim(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Victim cell: train ``params["victim"]`` from scratch on the real users plus the profiles
    file ``params["profiles"]`` (none: clean), measure the targets' promotion and the utility (and, with ``ANATOMY``
    among ``params["measures"]``, the anatomy of the target scores);
    ``params["draw"]`` (default 0) picks the victim's seed (its initialisation and batches) for the run; a defense
    drops users before training and the result counts them (``_defend``)."""
    use_threads(params.get("threads", 1), params.get("device", "cpu"))
    start = time.perf_counter()
    dataset, poison = cell_setting(params)
    train = dataset.train
    if params["profiles"]:
        train = FakeProfiles.load(Path(params["profiles"])).inject(train)
    train, real, filtered = _defend(train, dataset, poison, params)
    draw = f"/{params['draw']}" if params.get("draw") else ""  # draw 0 keeps the single-draw seed
    seed = zlib.crc32(f"victim/{params['victim']}/{params['run']}{draw}".encode())
    model = make_model(params["victim"], train.num_users, dataset.num_items, params["dim"],
                       torch.Generator().manual_seed(seed), **params.get("options", {})).to(params.get("device", "cpu"))
    history = train_native(model, train, TrainSettings(**params["train"]), seed)
    model.eval()
    real_train, real_test = dataset.train.subset(real), dataset.test.subset(real)
    scores = {**promotion(model, real_train, poison.targets, test=real_test), **utility(model, real_train, real_test)}
    if ANATOMY in params["measures"]:
        scores |= score_anatomy(*model.representations(), real_train, poison.targets)
    epochs = [row["seconds"] for row in history if row["epoch"] > 0]
    return {**scores, **filtered, "seconds": time.perf_counter() - start,
            "seconds_per_epoch": float(np.mean(epochs)) if epochs else 0.0, "peak_mib": _peak_mib()}


def _defend(train: Interactions, dataset: Dataset, poison: PoisonSetting,
            params: dict[str, Any]) -> tuple[Interactions, np.ndarray, dict[str, int]]:
    """(the users a defense lets train, the real users among them, how many it dropped). ``params["degree_filter"]``:
    drop the users shorter than the shortest real user (``defenses.degree_filter``; no real user goes);
    ``params["screen"]``: drop the users any of its detectors flags (``defenses.detector_screen``; real users go too,
    and the measures then cover the real users kept). Kept users keep their order, so the kept real users are the
    first rows."""
    n_real = dataset.train.num_users
    if params.get("degree_filter"):
        kept = long_enough_users(train, poison.real_floor())
    elif params.get("screen"):
        screen = list(detectors(params["screen"], params).values())
        kept = screened_users(train, dataset.train, dataset.num_items, screen)
    else:
        return train, np.arange(n_real), {}
    real = kept[kept < n_real]
    dropped = {"dropped_users": train.num_users - len(kept)}
    if params.get("screen"):
        dropped["dropped_real_users"] = n_real - len(real)
    return train.subset(kept), real, dropped


def run_stealth(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Stealth cell: every detector of ``params["detectors"]`` on the real users plus the profiles file
    ``params["profiles"]``: how well its score sets the fake users apart (ROC AUC, share caught at 1 % of the real)."""
    dataset, _ = cell_setting(params)
    train = FakeProfiles.load(Path(params["profiles"])).inject(dataset.train)
    fake = np.arange(train.num_users) >= dataset.train.num_users
    return {name: separation(detector(train, dataset.num_items), fake)
            for name, detector in detectors(params["detectors"], params).items()}


def detectors(names: list[str], params: dict[str, Any]) -> dict[str, Detector]:
    """The detectors ``names`` (those of ``defenses.profile_detectors`` and ``SUPERVISED``) for a cell's run."""
    known = tuple(params.get("known_attacks", KNOWN_ATTACKS))
    made = tuple(sorted(params.get("known_profiles", {}).items()))
    return {name: known_attack_detector(params["dataset"], params["data_dir"], params["run"],
                                        params.get("fake_share", FAKE_SHARE), name, known, made)
            if name in SUPERVISED else DETECTORS[name] for name in names}


@lru_cache(maxsize=2 * len(SUPERVISED))
def known_attack_detector(dataset_name: str, data_dir: str | None, run: int, fake_share: float,
                          name: str, known: tuple[str, ...], made: tuple[tuple[str, str], ...]) -> Detector:
    """The supervised detector ``name`` (of ``SUPERVISED``) the platform fits on its clean training data plus the fake
    users of the attacks ``known`` (all at once, or one detector per attack), made as run −1 − r's attack cells
    make them: the run's n_f and budget, targets and seeds no run r ≥ 0 uses. A heuristic's fake users are made here;
    a gradient attack's are read from the profiles file its run −1 − r attack cell wrote (``made``: (attack, path)
    pairs). Cached: a worker's cells of one run share it."""
    dataset = load(dataset_name, data_dir)
    poison = setting(dataset, -1 - run, fake_share)
    files = dict(made)
    if missing := [attack for attack in known if attack in GRADIENT_ATTACKS and attack not in files]:
        raise ValueError(f"the known gradient attacks {', '.join(missing)} need the profiles of their run {-1 - run} "
                         "attack cells (the cell's params 'known_profiles')")
    fakes = [FakeProfiles.load(Path(files[attack])) if attack in files
             else generate(attack, poison, AttackOptions(), -1 - run)[0] for attack in known]
    poisoned = [fake.inject(dataset.train) for fake in fakes]  # each known attack alone, as an attack arrives
    return SUPERVISED[name](dataset.train, poisoned, dataset.num_items)


def popularity(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The popularity baseline's utility and target promotion on clean data."""
    dataset, poison = cell_setting(params)
    scorer = PopularityScorer(dataset.train, dataset.num_items)
    return {**promotion(scorer, dataset.train, poison.targets),
            **utility(scorer, dataset.train, dataset.test)}

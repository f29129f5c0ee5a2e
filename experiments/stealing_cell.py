"""One cell of the model-stealing experiments: train (or reuse) a target model on a target half,
run the requested attacks through an attacker's view, and measure Agr@K and Recall@K."""

from __future__ import annotations

import time
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from attacks.stealing import ATTACKS, StealingRun, StealingSettings
from central.objectives import interaction_mask
from central.ranking_learner import TrainSettings, train_native
from central.stealing_data import AttackerView, QueryOracle, StealingSplit
from defenses.mixing import MixingDefense
from recsys.data import load_dataset
from recsys.list_metrics import agreement, recall
from recsys.models.ranking import RankingModel, make_model, recommend, save_atomically

LOGISTIC_NEGATIVES = 4  # sampled negatives per observed pair for the logistic targets (He et al. 2017)
RECALL_K = 50  # Recall@50, as Fig. 8 reports it


@lru_cache(maxsize=4)
def _split(dataset: str, data_dir: str | None, seed: int, attacker_fraction: float) -> StealingSplit:
    """``data_dir`` is the resolved ``--data-dir``; "" or None means ``$FEDREC_DATA_DIR``, else the cache."""
    return StealingSplit.from_dataset(load_dataset(dataset, data_dir or None), seed, attacker_fraction)


def target_model(split: StealingSplit, name: str, dim: int, epochs: int, seed: int, cache: Path | None) -> RankingModel:
    """The target model ``name`` trained in central mode on the target half's train lists with its
    native objective (reloaded from ``cache`` when that file exists)."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/target/{name}".encode()))
    model = make_model(name, split.target_train.num_users, split.num_items, dim, generator)
    if cache is not None and cache.is_file():
        model.bind(split.target_train)
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model
    negatives = LOGISTIC_NEGATIVES if model.native_loss == "logistic" else 1
    train_native(model, split.target_train, TrainSettings(epochs, negatives=negatives), seed)
    if cache is not None:
        save_atomically(model, cache)
    return model


def _stage_file(params: dict[str, Any], settings: StealingSettings, stage: str) -> str:
    """File name of a trained attack stage; it names everything the stage depends on."""
    model = f"{settings.clone}-d{settings.dim}-e{settings.aux_epochs}"
    if stage == "auxiliary":  # the auxiliary half depends on the seed only
        return f"{params['dataset']}-s{settings.seed}-aux-{model}.pt"
    return f"{params['dataset']}-s{settings.seed}-f{params['attacker_fraction']}-{stage}-{model}.{settings.epochs}.pt"


def run_cell(params: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Sweep cell: ``params`` holds dataset, data_dir, target, target_epochs, seed, attacker_fraction,
    n_mix, models_dir (trained targets and attack stages are cached there) and the
    ``StealingSettings`` fields under ``attacker``; every attack runs."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    seed = params["seed"]
    split = _split(params["dataset"], params["data_dir"], seed, params["attacker_fraction"])
    settings = StealingSettings(**{**params["attacker"], "seed": seed})
    models = Path(params["models_dir"])
    prefix = f"{params['dataset']}-s{seed}"  # the halves depend on the seed only
    target = target_model(split, params["target"], settings.dim, params["target_epochs"], seed,
                          models / f"{prefix}-target-{params['target']}-d{settings.dim}-e{params['target_epochs']}.pt")
    oracle = QueryOracle(target, split.target_train, split.num_items)
    served = MixingDefense(oracle, split.item_popularity(), params["n_mix"], seed) if params["n_mix"] else oracle
    view = AttackerView(split, served)
    run = StealingRun(view, settings, lambda stage: models / _stage_file(params, settings, stage))

    known = torch.from_numpy(split.attacker_users)
    truth = oracle.query(known, settings.k)  # the target model's own lists (not the served ones)
    exclude = oracle.interacted[known]
    agr = {name: agreement(truth, recommend(ATTACKS[name](run), torch.arange(len(known)), exclude, settings.k))
           for name in ATTACKS}
    everyone = torch.arange(split.target_train.num_users)
    test = interaction_mask(split.target_test, split.num_items)
    own, shown = oracle.query(everyone, RECALL_K), served.query(everyone, RECALL_K)
    return {
        "agr": agr,
        "target_recall": recall(own, test),
        "served_recall": recall(shown, test),
        "mixed_per_list": float((own != shown).sum(1).double().mean()),
        "target_users_read": len(view.read_target_users),
        "known_users": len(known),
        "seconds": time.perf_counter() - start,
        "final_losses": {stage: rows[-2].get("train/loss") for stage, rows in run.histories.items() if len(rows) > 2},
    }

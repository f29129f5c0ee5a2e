"""Real-data checks of the TCD reproduction (ML-100K, FilmTrust; skipped without ../shared/datasets).

The attack checks run by default (seconds each); TCD and the optimised attacks are ``slow``
(minutes; ``pytest -m slow``)."""

from __future__ import annotations

import pytest

from central.rating_mf import MFConfig
from central.target_metrics import robustness_improvement
from defenses.tcd import TCDSettings, TripleCooperativeLearner, agreed_pseudo_labels
from experiments.tcd import _split, run_cell


def _cell(shared_datasets, folder, dataset: str, attack: str | None, defense: str = "none") -> dict:
    params = {"dataset": dataset, "data_dir": str(shared_datasets), "targets": "unpopular", "seed": 0,
              "attack": attack, "defense": defense, "epochs": 40, "knowledge_cost": 0.4, "attack_size": 0.03}
    return run_cell(params, folder / "cells" / "cell")


def test_paper_split_sizes(shared_datasets):
    for dataset, users, ratings in (("ml-100k", 943, 100_000), ("filmtrust", 796, 30_880)):
        split = _split(dataset, str(shared_datasets), 0)
        assert len(split.test) == users
        assert len(split.train) + len(split.valid) + len(split.test) == ratings


def test_average_attack_raises_unpopular_target_hr_on_ml100k(shared_datasets, tmp_path):
    origin = _cell(shared_datasets, tmp_path, "ml-100k", None)
    attacked = _cell(shared_datasets, tmp_path, "ml-100k", "average")
    assert origin["target_hr"] < 0.01 < 0.1 < attacked["target_hr"]
    assert 0.15 < origin["test_hr"] < 0.3


@pytest.mark.slow
def test_after_one_pretraining_epoch_on_filmtrust_every_unlabelled_pair_falls_in_the_floor_bin(shared_datasets):
    """Π clamped labels all of them 0.5 stars; Π ``authors`` labels them 0 (docs: why Π matters on FilmTrust)."""
    split = _split("filmtrust", str(shared_datasets), 0)
    learner = TripleCooperativeLearner(split, MFConfig(), 0, TCDSettings(pretrain_epochs=1))
    learner.train_epoch(1)
    first, second = learner.models[1].scores(), learner.models[2].scores()
    unlabelled = int((~learner.labelled).sum())
    clamped = agreed_pseudo_labels(first, second, learner.labelled, split.grid, "clamped")
    assert len(clamped) == unlabelled and bool((clamped.values == 0.125).all())
    authors = agreed_pseudo_labels(first, second, learner.labelled, split.grid, "authors")
    assert len(authors) > 0.99 * unlabelled and bool((authors.values == 0.0).all())


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["pga", "tna"])
def test_optimised_attacks_raise_unpopular_target_hr_on_ml100k(shared_datasets, tmp_path, attack):
    origin = _cell(shared_datasets, tmp_path, "ml-100k", None)
    attacked = _cell(shared_datasets, tmp_path, "ml-100k", attack)
    assert attacked["target_hr"] > origin["target_hr"] + 0.05


@pytest.mark.slow
def test_tcd_undoes_the_average_attack_without_hurting_test_hr_on_ml100k(shared_datasets, tmp_path):
    origin = _cell(shared_datasets, tmp_path, "ml-100k", None)
    attacked = _cell(shared_datasets, tmp_path, "ml-100k", "average")
    defended = _cell(shared_datasets, tmp_path, "ml-100k", "average", "tcd")
    assert robustness_improvement(defended["target_hr"], origin["target_hr"], attacked["target_hr"]) >= 0.8
    assert defended["test_hr"] >= origin["test_hr"] - 0.005


@pytest.mark.slow
def test_tcd_does_not_raise_the_random_attack_targets_on_filmtrust(shared_datasets, tmp_path):
    """With the authors' FilmTrust settings (Π ``authors``, T_pre 6, last epoch) TCD no longer promotes
    the targets there (with Π clamped it raised them about tenfold)."""
    origin = _cell(shared_datasets, tmp_path, "filmtrust", None)
    attacked = _cell(shared_datasets, tmp_path, "filmtrust", "random")
    defended = _cell(shared_datasets, tmp_path, "filmtrust", "random", "tcd")
    assert defended["target_hr"] <= attacked["target_hr"]
    assert defended["test_hr"] >= origin["test_hr"] - 0.005

"""Defenses: robust aggregation rules (registered in ``server.aggregation.AGGREGATIONS``) and
central-mode training defenses (TCD, AT, RAT), registered in ``DEFENSES``.

Model stealing is defended at the query interface instead: ``defenses.mixing.MixingDefense`` wraps
the target's top-K oracle and mixes popular items into every returned list.

A training defense builds the central-mode learner that trains the defended model:
``DEFENSES[name](split, config, seed, dataset_name, pseudo_label_rate)``; ``"none"`` is the
undefended MF. Every learner exposes ``final_model()`` after ``central.app.train_central``.
"""

from __future__ import annotations

from collections.abc import Callable

from central.learner import CentralLearner
from central.rating_mf import MFConfig, RatingMFLearner
from central.rating_split import RatingSplit
from defenses.adversarial_training import AdversarialPerturbation, RandomPerturbation
from defenses.tcd import PRETRAIN_EPOCHS, PSEUDO_LABEL_RATE, TripleCooperativeLearner

DefenseFactory = Callable[[RatingSplit, MFConfig, int, str, "float | None"], CentralLearner]


def _tcd(split: RatingSplit, config: MFConfig, seed: int, dataset: str, rate: float | None) -> CentralLearner:
    pretrain = PRETRAIN_EPOCHS.get(dataset, 1)
    return TripleCooperativeLearner(split, config, seed, pretrain, PSEUDO_LABEL_RATE.get(dataset, 1.0)
                                    if rate is None else rate)


DEFENSES: dict[str, DefenseFactory] = {
    "none": lambda split, config, seed, dataset, rate: RatingMFLearner(split, config, seed),
    "at": lambda split, config, seed, dataset, rate: RatingMFLearner(split, config, seed, AdversarialPerturbation()),
    "rat": lambda split, config, seed, dataset, rate: RatingMFLearner(split, config, seed, RandomPerturbation()),
    "tcd": _tcd,
}

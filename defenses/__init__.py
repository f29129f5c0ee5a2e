"""Defenses: robust aggregation rules (registered in ``server.aggregation.AGGREGATIONS``) and
central-mode training defenses (TCD, AT, RAT), registered in ``DEFENSES``.

Implicit training data are filtered before training by ``defenses.degree_filter`` (users shorter than the shortest
real user dropped) or ``defenses.detector_screen`` (users a detector flags dropped), and
``defenses.profile_detectors`` scores how suspicious each user looks. Model stealing is
defended at the query interface instead: ``defenses.mixing.MixingDefense`` wraps the target's top-K oracle and mixes
popular items into every returned list.

A training defense builds the central-mode learner that trains the defended model:
``DEFENSES[name](split, config, seed, dataset_name, tcd_overrides)``; ``"none"`` is the
undefended MF; ``tcd_overrides`` (fields of ``defenses.tcd.TCDSettings``, None = the dataset's
default) only concern TCD. Every learner exposes ``final_model()`` after ``central.app.train_central``.
"""

from __future__ import annotations

from collections.abc import Callable

from central.learner import CentralLearner
from central.rating_mf import MFConfig, RatingMFLearner
from central.rating_split import RatingSplit
from defenses.adversarial_training import AdversarialPerturbation, RandomPerturbation
from defenses.tcd import TripleCooperativeLearner, tcd_settings

DefenseFactory = Callable[[RatingSplit, MFConfig, int, str, dict], CentralLearner]

DEFENSES: dict[str, DefenseFactory] = {
    "none": lambda split, config, seed, dataset, tcd: RatingMFLearner(split, config, seed),
    "at": lambda split, config, seed, dataset, tcd: RatingMFLearner(split, config, seed, AdversarialPerturbation()),
    "rat": lambda split, config, seed, dataset, tcd: RatingMFLearner(split, config, seed, RandomPerturbation()),
    "tcd": lambda split, config, seed, dataset, tcd: TripleCooperativeLearner(split, config, seed,
                                                                             tcd_settings(dataset, **tcd)),
}

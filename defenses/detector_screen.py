"""A screen on fake-profile detectors' scores (``defenses.profile_detectors``), run on the training data before a
model sees it. The platform calibrates each detector's threshold on its clean data, before the fake users join: the
score that only ``FALSE_POSITIVE_RATE`` (1 %) of its users exceed; every user of the poisoned data scored above the
threshold of any of the detectors is dropped. Real users go too: about 1 % per detector on clean data, more where
fake users raise the scores of real ones (a copied user's nearest neighbour becomes its copy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from defenses.profile_detectors import DETECTORS, FALSE_POSITIVE_RATE
from recsys.data import Interactions


def screen_threshold(clean: Interactions, num_items: int, detector: str) -> float:
    """The ``detector`` score that only ``FALSE_POSITIVE_RATE`` of the users of ``clean`` exceed."""
    return float(np.quantile(DETECTORS[detector](clean, num_items), 1.0 - FALSE_POSITIVE_RATE, method="higher"))


def screened_users(train: Interactions, clean: Interactions, num_items: int, detectors: Sequence[str]) -> np.ndarray:
    """The users of ``train`` (ascending) that every one of ``detectors`` scores at most the threshold ``clean``
    calibrates for it."""
    passed = np.ones(train.num_users, dtype=bool)
    for detector in detectors:
        passed &= DETECTORS[detector](train, num_items) <= screen_threshold(clean, num_items, detector)
    return np.flatnonzero(passed)

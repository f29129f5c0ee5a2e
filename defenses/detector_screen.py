"""A screen on a fake-profile detector's score (``defenses.profile_detectors``), run on the training data before a
model sees it. The platform calibrates the threshold on its clean data, before the fake users join: the score that
only ``FALSE_POSITIVE_RATE`` (1 %) of its users exceed; every user of the poisoned data scored above it is dropped.
Real users go too: about 1 % on clean data, more where fake users raise the scores of real ones (a copied user's
nearest neighbour becomes its copy)."""

from __future__ import annotations

import numpy as np

from defenses.profile_detectors import DETECTORS, FALSE_POSITIVE_RATE
from recsys.data import Interactions


def screen_threshold(clean: Interactions, num_items: int, detector: str) -> float:
    """The ``detector`` score that only ``FALSE_POSITIVE_RATE`` of the users of ``clean`` exceed."""
    return float(np.quantile(DETECTORS[detector](clean, num_items), 1.0 - FALSE_POSITIVE_RATE, method="higher"))


def screened_users(train: Interactions, clean: Interactions, num_items: int, detector: str) -> np.ndarray:
    """The users of ``train`` (ascending) scored at most the threshold ``clean`` calibrates for ``detector``."""
    scores = DETECTORS[detector](train, num_items)
    return np.flatnonzero(scores <= screen_threshold(clean, num_items, detector))

"""A screen on fake-profile detectors' scores (``defenses.profile_detectors``), run on the training data before a
model sees it. The platform calibrates each detector's threshold on its clean data, before the fake users join: the
score that only 1 % of its users exceed (``profile_detectors.flag_threshold``); every user of the poisoned data
scored above the threshold of any of the detectors is dropped. Real users go too: about 1 % per detector on clean
data, more where fake users raise the scores of real ones (a copied user's nearest neighbour becomes its copy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from defenses.profile_detectors import Detector, flag_threshold
from recsys.data import Interactions


def screened_users(train: Interactions, clean: Interactions, num_items: int,
                   detectors: Sequence[Detector]) -> np.ndarray:
    """The users of ``train`` (ascending) that every one of ``detectors`` scores at most the threshold ``clean``
    calibrates for it."""
    passed = np.ones(train.num_users, dtype=bool)
    for score in detectors:
        passed &= score(train, num_items) <= flag_threshold(score(clean, num_items))
    return np.flatnonzero(passed)

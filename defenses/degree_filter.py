"""A filter on the number of interactions, run on the training data before a model sees it: every user holding fewer
items than a floor is dropped. With the floor at the shortest real user's length (a platform's own minimum, e.g.
MovieLens keeps users with at least 20 ratings) it drops no real user and every fake user shorter than any real one:
the cheapest check against short fake profiles, which the implicit attacks' stealth is measured against."""

from __future__ import annotations

import numpy as np

from recsys.data import Interactions


def long_enough_users(train: Interactions, floor: int) -> np.ndarray:
    """The users of ``train`` holding at least ``floor`` items, ascending."""
    return np.flatnonzero(train.lengths() >= floor)

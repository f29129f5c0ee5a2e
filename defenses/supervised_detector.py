"""A supervised detector of fake profiles, in the setting of supervised shilling detection (Williams, Mobasher & Burke
2007): the platform injects the fake users of attacks it knows into its own clean data, describes every user by the
unsupervised detectors' scores (``defenses.profile_detectors``) and fits a classifier that tells the injected users
from the real ones; the classifier then scores the users of any data, the attacks it never saw included.

The classifier is a logistic regression on the scores standardised on the labelled data, each class weighing half
of the loss (fake users are 1–2 % of the users), with an L2 penalty on the weights (not the bias), fitted by scipy's
L-BFGS on the exact loss and gradient. A user's suspicion score is the fitted log-odds of being fake.

``graph_features`` describes a user also by its neighbourhood in the user–item graph: the scores averaged over two
hops of the row-normalised graph (user -> its items -> their users, the user itself included), the propagation of a
simplified graph convolution (SGC, Wu et al. ICML 2019), concatenated to the user's own scores (as SIGN, Frasca et al.
2020, concatenates its hops). A logistic regression on them is a linear graph neural network learned on the graph.

One logistic regression fitted on the fake users of several attacks at once has one direction to read them all by;
``fit_each`` fits one per attack and scores a user by the most suspicious of them (``MostSuspicious``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.optimize import minimize

from defenses.profile_detectors import DETECTORS
from recsys.data import Interactions

FEATURES = ("length", "popularity", "degsim", "nearest")
L2 = 1e-3


_CACHED = 8  # score matrices kept: a stealth cell's data, and the labelled data of a run's fits
_scores: OrderedDict[tuple[bytes, int], np.ndarray] = OrderedDict()


def features(train: Interactions, num_items: int) -> np.ndarray:
    """[users, len(FEATURES)]: every user's score by each detector of ``FEATURES`` (read-only). The last ``_CACHED``
    results are kept by the data's content, so the supervised detectors scoring or fitted on the same data compute
    its two Jaccard passes once."""
    key = (hashlib.blake2b(train.indptr.tobytes() + train.items.tobytes(), digest_size=16).digest(), num_items)
    if key not in _scores:
        _scores[key] = np.column_stack([DETECTORS[name](train, num_items) for name in FEATURES])
        _scores[key].setflags(write=False)
        if len(_scores) > _CACHED:
            _scores.popitem(last=False)
    _scores.move_to_end(key)
    return _scores[key]


def neighbourhood_mean(train: Interactions, num_items: int, rows: np.ndarray) -> np.ndarray:
    """Every user's mean, over its items, of each item's mean of ``rows`` (one row per user) over its users."""
    shape = (train.num_users, num_items)
    clicks = scipy.sparse.csr_matrix((np.ones(train.nnz), train.items, train.indptr), shape=shape)
    per_item = clicks.T @ rows / np.maximum(np.bincount(train.items, minlength=num_items), 1)[:, None]
    return clicks @ per_item / np.maximum(train.lengths(), 1)[:, None]


def graph_features(train: Interactions, num_items: int) -> np.ndarray:
    """[users, 2 · len(FEATURES)]: ``features`` and their ``neighbourhood_mean``."""
    own = features(train, num_items)
    return np.hstack((own, neighbourhood_mean(train, num_items, own)))


Describe = Callable[[Interactions, int], np.ndarray]  # (training data, number of items) -> a feature row per user


def balanced_logistic_loss(params: np.ndarray, x: np.ndarray, fake: np.ndarray,
                           l2: float = L2) -> tuple[float, np.ndarray]:
    """(loss, gradient) at ``params`` = (weights, bias): the mean logistic loss of the fake users (mask ``fake``)
    plus that of the real users, halved, plus ``l2`` / 2 · ‖weights‖²."""
    weights, bias = params[:-1], params[-1]
    share = np.where(fake, 0.5 / fake.sum(), 0.5 / (~fake).sum())
    logits = x @ weights + bias
    sign = np.where(fake, 1.0, -1.0)
    loss = float(share @ np.logaddexp(0.0, -sign * logits)) + 0.5 * l2 * float(weights @ weights)
    residual = share * (1.0 / (1.0 + np.exp(-logits)) - fake)
    return loss, np.append(x.T @ residual + l2 * weights, residual.sum())


@dataclass(frozen=True)
class LogisticDetector:
    """A fitted detector: the features' mean and scale on its labelled data, the weights, the bias and how a user is
    described (``features`` or ``graph_features``)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    describe: Describe = features

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale @ self.weights + self.bias

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        """Every user's suspicion score on ``train`` (a detector of ``profile_detectors``' signature)."""
        return self.log_odds(self.describe(train, num_items))


def fit_logistic(x: np.ndarray, fake: np.ndarray, l2: float = L2, describe: Describe = features) -> LogisticDetector:
    """The detector minimising ``balanced_logistic_loss`` on the standardised rows of ``x`` (``describe``'s rows)
    labelled by ``fake``."""
    fake = np.asarray(fake, dtype=bool)
    if fake.all() or not fake.any():
        raise ValueError("a supervised detector needs both fake and real users in its labelled data")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standard = (x - mean) / scale
    fit = minimize(balanced_logistic_loss, np.zeros(x.shape[1] + 1), args=(standard, fake, l2), jac=True,
                   method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 1000})
    return LogisticDetector(mean, scale, fit.x[:-1], float(fit.x[-1]), describe)


@dataclass(frozen=True)
class MostSuspicious:
    """Detectors fitted one per known attack, all describing users the same way: a user's score is its highest
    log-odds (a fake user needs to look like the fake users of one known attack only, not of all of them at once)."""

    detectors: tuple[LogisticDetector, ...]

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        x = self.detectors[0].describe(train, num_items)
        return np.max([detector.log_odds(x) for detector in self.detectors], axis=0)


def fit_each(poisoned: Sequence[Interactions], num_real: int, num_items: int, l2: float = L2,
             describe: Describe = features) -> MostSuspicious:
    """One detector per data of ``poisoned``: the same ``num_real`` real users first, then the fake users of one
    known attack."""
    return MostSuspicious(tuple(fit_detector(train, np.arange(train.num_users) >= num_real, num_items, l2, describe)
                                for train in poisoned))


def fit_detector(train: Interactions, fake: np.ndarray, num_items: int, l2: float = L2,
                 describe: Describe = features) -> LogisticDetector:
    """The detector fitted on the users of ``train`` described by ``describe``, those of mask ``fake`` injected by
    known attacks."""
    return fit_logistic(describe(train, num_items), fake, l2, describe)

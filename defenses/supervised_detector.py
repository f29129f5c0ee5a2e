"""A supervised detector of fake profiles, in the setting of supervised shilling detection (Williams, Mobasher & Burke
2007): the platform injects the fake users of attacks it knows into its own clean data, describes every user by the
unsupervised detectors' scores (``defenses.profile_detectors``) and fits a classifier that tells the injected users
from the real ones; the classifier then scores the users of any data, the attacks it never saw included.

The classifier is a logistic regression on the scores standardised on the labelled data, each class weighing half
of the loss (fake users are 1–2 % of the users), with an L2 penalty on the weights (not the bias), fitted by scipy's
L-BFGS on the exact loss and gradient. A user's suspicion score is the fitted log-odds of being fake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from defenses.profile_detectors import DETECTORS
from recsys.data import Interactions

FEATURES = ("length", "popularity", "degsim", "nearest")
L2 = 1e-3


def features(train: Interactions, num_items: int) -> np.ndarray:
    """[users, len(FEATURES)]: every user's score by each detector of ``FEATURES``."""
    return np.column_stack([DETECTORS[name](train, num_items) for name in FEATURES])


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
    """A fitted detector: the features' mean and scale on its labelled data, the weights and the bias."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale @ self.weights + self.bias

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        """Every user's suspicion score on ``train`` (a detector of ``profile_detectors``' signature)."""
        return self.log_odds(features(train, num_items))


def fit_logistic(x: np.ndarray, fake: np.ndarray, l2: float = L2) -> LogisticDetector:
    """The detector minimising ``balanced_logistic_loss`` on the standardised rows of ``x`` labelled by ``fake``."""
    fake = np.asarray(fake, dtype=bool)
    if fake.all() or not fake.any():
        raise ValueError("a supervised detector needs both fake and real users in its labelled data")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standard = (x - mean) / scale
    fit = minimize(balanced_logistic_loss, np.zeros(x.shape[1] + 1), args=(standard, fake, l2), jac=True,
                   method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 1000})
    return LogisticDetector(mean, scale, fit.x[:-1], float(fit.x[-1]))


def fit_detector(train: Interactions, fake: np.ndarray, num_items: int, l2: float = L2) -> LogisticDetector:
    """The detector fitted on the users of ``train``, those of mask ``fake`` injected by known attacks."""
    return fit_logistic(features(train, num_items), fake, l2)

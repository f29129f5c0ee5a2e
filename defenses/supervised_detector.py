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

The platform injects each known attack alone into its clean data, as an attack arrives, and describes its fake users
there (``fit_joint``): injected together, the known attacks' fake users, who click the same targets, would be
described among each other, a crowd no single attack forms (on the Gowalla subsample a detector fitted that way
caught its own known fake users and none of the same attack's arriving alone). One logistic regression fitted on the
fake users of several attacks has one direction to read them all by; ``fit_each`` fits one per attack and scores a
user by the most suspicious of them (``MostSuspicious``), and ``fit_perceptron`` fits a non-linear classifier
instead: one hidden layer of ``WIDTH`` tanh units, the same balanced loss and penalty, its hand-written gradient
fitted by the same L-BFGS from a seeded start (tanh, not ReLU: smooth, so L-BFGS converges; with ReLU it stopped at a
kink, the gradient still 1e-2). On ``graph_features`` it is SIGN itself (an MLP on the concatenated hops), a
non-linear graph neural network.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.optimize import minimize

from defenses.profile_detectors import DETECTORS, Detector
from recsys.data import Interactions

FEATURES = ("length", "popularity", "degsim", "nearest")
L2 = 1e-3
WIDTH = 16  # the perceptron's hidden tanh units


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


@dataclass(frozen=True)
class TwoHopMean:
    """The two mean aggregations of a data's user–item graph: items over their users, then users over their items
    (users without items and items without users average to 0)."""

    clicks: scipy.sparse.csr_matrix  # [users, items]
    clicked: scipy.sparse.csr_matrix  # its transpose
    item_counts: np.ndarray  # users per item, at least 1
    user_counts: np.ndarray  # items per user, at least 1

    @classmethod
    def of(cls, train: Interactions, num_items: int) -> TwoHopMean:
        clicks = scipy.sparse.csr_matrix((np.ones(train.nnz), train.items, train.indptr),
                                         shape=(train.num_users, num_items))
        return cls(clicks, clicks.T.tocsr(), np.maximum(np.bincount(train.items, minlength=num_items), 1)[:, None],
                   np.maximum(train.lengths(), 1)[:, None])

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Every user's mean, over its items, of each item's mean of ``rows`` (one row per user)."""
        return self.clicks @ (self.clicked @ rows / self.item_counts) / self.user_counts

    def transposed(self, rows: np.ndarray) -> np.ndarray:
        """The transposed map (a gradient's way back through ``__call__``)."""
        return self.clicks @ (self.clicked @ (rows / self.user_counts) / self.item_counts)


def neighbourhood_mean(train: Interactions, num_items: int, rows: np.ndarray) -> np.ndarray:
    """Every user's mean, over its items, of each item's mean of ``rows`` (one row per user)."""
    return TwoHopMean.of(train, num_items)(rows)


def graph_features(train: Interactions, num_items: int) -> np.ndarray:
    """[users, 2 · len(FEATURES)]: ``features`` and their ``neighbourhood_mean``."""
    own = features(train, num_items)
    return np.hstack((own, neighbourhood_mean(train, num_items, own)))


Describe = Callable[[Interactions, int], np.ndarray]  # (training data, number of items) -> a feature row per user


def balanced_loss(logits: np.ndarray, fake: np.ndarray) -> tuple[float, np.ndarray]:
    """(the mean logistic loss of the fake users (mask ``fake``) plus that of the real users, halved; its gradient
    with respect to ``logits``)."""
    share = np.where(fake, 0.5 / fake.sum(), 0.5 / (~fake).sum())
    sign = np.where(fake, 1.0, -1.0)
    return float(share @ np.logaddexp(0.0, -sign * logits)), share * (1.0 / (1.0 + np.exp(-logits)) - fake)


def balanced_logistic_loss(params: np.ndarray, x: np.ndarray, fake: np.ndarray,
                           l2: float = L2) -> tuple[float, np.ndarray]:
    """(loss, gradient) at ``params`` = (weights, bias): ``balanced_loss``'s loss of the logits x · weights + bias plus
    ``l2`` / 2 · ‖weights‖²."""
    weights, bias = params[:-1], params[-1]
    loss, residual = balanced_loss(x @ weights + bias, fake)
    return loss + 0.5 * l2 * float(weights @ weights), np.append(x.T @ residual + l2 * weights, residual.sum())


@dataclass(frozen=True)
class Logistic:
    """A linear classifier: a user's log-odds of being fake = its standardised row · ``weights`` + ``bias``."""

    weights: np.ndarray
    bias: float

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return z @ self.weights + self.bias


@dataclass(frozen=True)
class Perceptron:
    """One hidden layer of tanh units: log-odds = tanh(z · ``hidden`` + ``hidden_bias``) · ``output``
    + ``output_bias``."""

    hidden: np.ndarray  # [features, WIDTH]
    hidden_bias: np.ndarray
    output: np.ndarray
    output_bias: float

    @classmethod
    def unpack(cls, params: np.ndarray, num_features: int) -> Perceptron:
        """The perceptron whose parameters, flattened in field order, are ``params``."""
        width = (len(params) - 1) // (num_features + 2)
        cut = np.cumsum([num_features * width, width, width])
        hidden, hidden_bias, output, output_bias = np.split(params, cut)
        return cls(hidden.reshape(num_features, width), hidden_bias, output, float(output_bias[0]))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z @ self.hidden + self.hidden_bias) @ self.output + self.output_bias


def perceptron_loss(params: np.ndarray, x: np.ndarray, fake: np.ndarray, l2: float = L2) -> tuple[float, np.ndarray]:
    """(loss, gradient) at ``params`` (a ``Perceptron``'s, flattened): ``balanced_loss``'s loss of its logits plus
    ``l2`` / 2 · (‖hidden‖² + ‖output‖²); the gradient by hand."""
    net = Perceptron.unpack(params, x.shape[1])
    active = np.tanh(x @ net.hidden + net.hidden_bias)
    loss, residual = balanced_loss(active @ net.output + net.output_bias, fake)
    back = np.outer(residual, net.output) * (1.0 - active ** 2)
    gradient = (x.T @ back + l2 * net.hidden, back.sum(axis=0), active.T @ residual + l2 * net.output,
                [residual.sum()])
    penalty = 0.5 * l2 * (float(np.sum(net.hidden ** 2)) + float(net.output @ net.output))
    return loss + penalty, np.concatenate([np.ravel(part) for part in gradient])


Classifier = Logistic | Perceptron


@dataclass(frozen=True)
class FittedDetector:
    """A fitted detector: the features' mean and scale on its labelled data, the classifier of the standardised
    features and how a user is described (``features`` or ``graph_features``)."""

    mean: np.ndarray
    scale: np.ndarray
    classifier: Classifier
    describe: Describe = features

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        return self.classifier((x - self.mean) / self.scale)

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        """Every user's suspicion score on ``train`` (a detector of ``profile_detectors``' signature)."""
        return self.log_odds(self.describe(train, num_items))


def standardised(x: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(the labels as a mask, the columns' mean and scale (1 where constant), the standardised rows)."""
    fake = np.asarray(fake, dtype=bool)
    if fake.all() or not fake.any():
        raise ValueError("a supervised detector needs both fake and real users in its labelled data")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return fake, mean, scale, (x - mean) / scale


def minimise(loss: Callable[..., tuple[float, np.ndarray]], start: np.ndarray, *args: object) -> np.ndarray:
    """The parameters where L-BFGS, from ``start``, stops on ``loss(params, *args)`` = (value, gradient)."""
    return minimize(loss, start, args=args, jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 1000}).x


def fit_logistic(x: np.ndarray, fake: np.ndarray, l2: float = L2, describe: Describe = features) -> FittedDetector:
    """The detector minimising ``balanced_logistic_loss`` on the standardised rows of ``x`` (``describe``'s rows)
    labelled by ``fake``."""
    fake, mean, scale, standard = standardised(x, fake)
    params = minimise(balanced_logistic_loss, np.zeros(x.shape[1] + 1), standard, fake, l2)
    return FittedDetector(mean, scale, Logistic(params[:-1], float(params[-1])), describe)


def fit_perceptron(x: np.ndarray, fake: np.ndarray, l2: float = L2, describe: Describe = features,
                   seed: int = 0) -> FittedDetector:
    """The detector minimising ``perceptron_loss`` on the standardised rows of ``x``, from hidden weights drawn
    N(0, 1 / features) and output weights N(0, 1 / ``WIDTH``) by ``seed``, biases 0 (a local minimum: the loss is not
    convex)."""
    fake, mean, scale, standard = standardised(x, fake)
    rng, columns = np.random.default_rng(seed), x.shape[1]
    start = np.concatenate((rng.normal(0.0, columns ** -0.5, columns * WIDTH), np.zeros(WIDTH),
                            rng.normal(0.0, WIDTH ** -0.5, WIDTH), [0.0]))
    params = minimise(perceptron_loss, start, standard, fake, l2)
    return FittedDetector(mean, scale, Perceptron.unpack(params, columns), describe)


Fit = Callable[..., FittedDetector]  # (rows, fake mask, l2, describe) -> detector: fit_logistic or fit_perceptron
# (clean training data, the data with each known attack alone injected, number of items) -> a fitted detector
Learn = Callable[[Interactions, Sequence[Interactions], int], Detector]


@dataclass(frozen=True)
class MostSuspicious:
    """Detectors fitted one per known attack: a user's score is its highest log-odds (a fake user needs to look like
    the fake users of one known attack only, not of all of them at once)."""

    detectors: tuple[Detector, ...]

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        return np.max([detector(train, num_items) for detector in self.detectors], axis=0)


def fit_each(clean: Interactions, poisoned: Sequence[Interactions], num_items: int, l2: float = L2,
             describe: Describe = features, fit: Fit = fit_logistic) -> MostSuspicious:
    """One detector per data of ``poisoned`` (``clean``'s real users first, then the fake users of one known attack),
    its users all described on it."""
    return MostSuspicious(tuple(fit_detector(train, np.arange(train.num_users) >= clean.num_users, num_items, l2,
                                             describe, fit) for train in poisoned))


def fit_detector(train: Interactions, fake: np.ndarray, num_items: int, l2: float = L2,
                 describe: Describe = features, fit: Fit = fit_logistic) -> FittedDetector:
    """The detector ``fit`` fits on the users of ``train`` described by ``describe``, those of mask ``fake``
    injected by known attacks."""
    return fit(describe(train, num_items), fake, l2, describe)


def fit_joint(clean: Interactions, poisoned: Sequence[Interactions], num_items: int, l2: float = L2,
              describe: Describe = features, fit: Fit = fit_logistic) -> FittedDetector:
    """One detector ``fit`` fits on the real users described on ``clean`` and the fake users of every known attack
    described on its own data of ``poisoned`` (``clean``'s users first, then that attack's fake users)."""
    rows = [describe(clean, num_items)] + [describe(train, num_items)[clean.num_users:] for train in poisoned]
    x = np.vstack(rows)
    return fit(x, np.arange(len(x)) >= clean.num_users, l2, describe)

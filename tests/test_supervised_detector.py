"""The supervised detector (``defenses.supervised_detector``): its loss and gradient against autograd, the fit at the
loss's minimum, balanced classes, the perceptron's hand-written gradient and what it catches that one regression
cannot, a detector trained on one draw of uniform-filler fake users catching another, and the
graph features (a user's scores averaged over two hops of the user–item graph) against hand-built values and a loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defenses.profile_detectors import separation
from defenses.supervised_detector import (FEATURES, WIDTH, Logistic, Perceptron, TwoHopMean, balanced_logistic_loss,
                                          features, fit_detector, fit_each, fit_joint, fit_logistic, fit_perceptron,
                                          graph_features, neighbourhood_mean, perceptron_loss)
from recsys.data.dataset import Interactions
from tests.helpers import random_attack_data


def _torch_loss(params: torch.Tensor, x: np.ndarray, fake: np.ndarray, l2: float) -> torch.Tensor:
    """The balanced loss written another way: the two classes' mean softplus losses, averaged."""
    logits = torch.from_numpy(x) @ params[:-1] + params[-1]
    mask = torch.from_numpy(fake)
    return 0.5 * (torch.nn.functional.softplus(-logits[mask]).mean()
                  + torch.nn.functional.softplus(logits[~mask]).mean()) + 0.5 * l2 * params[:-1] @ params[:-1]


def _torch_perceptron_loss(params: torch.Tensor, x: np.ndarray, fake: np.ndarray, l2: float) -> torch.Tensor:
    """The perceptron's balanced loss by torch's layers and autograd."""
    columns = x.shape[1]
    hidden, rest = params[:columns * WIDTH].reshape(columns, WIDTH), params[columns * WIDTH:]
    logits = torch.tanh(torch.from_numpy(x) @ hidden + rest[:WIDTH]) @ rest[WIDTH:-1] + rest[-1]
    mask = torch.from_numpy(fake)
    return 0.5 * (torch.nn.functional.softplus(-logits[mask]).mean()
                  + torch.nn.functional.softplus(logits[~mask]).mean()) \
        + 0.5 * l2 * ((hidden ** 2).sum() + rest[WIDTH:-1] @ rest[WIDTH:-1])


def _labelled(seed: int = 0, users: int = 200, fakes: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fake = np.arange(users) >= users - fakes
    return rng.normal(size=(users, 4)) + 1.5 * fake[:, None] * rng.normal(size=4), fake


@pytest.mark.parametrize("loss, reference_loss, size", [(balanced_logistic_loss, _torch_loss, 5),
                                                         (perceptron_loss, _torch_perceptron_loss, 6 * WIDTH + 1)])
def test_loss_and_hand_written_gradient_equal_autograd(loss, reference_loss, size):
    x, fake = _labelled()
    params = np.random.default_rng(1).normal(size=size)
    value, gradient = loss(params, x, fake, l2=0.1)
    reference = torch.tensor(params, requires_grad=True)
    expected = reference_loss(reference, x, fake, l2=0.1)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(gradient, reference.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_the_perceptrons_fit_is_where_its_gradient_vanishes():
    x, fake = _labelled()
    detector = fit_perceptron(x, fake)
    net = detector.classifier
    flat = np.concatenate((net.hidden.ravel(), net.hidden_bias, net.output, [net.output_bias]))
    unpacked = Perceptron.unpack(flat, x.shape[1])
    assert all(np.array_equal(getattr(unpacked, name), getattr(net, name)) for name in vars(net))
    assert np.abs(perceptron_loss(flat, (x - detector.mean) / detector.scale, fake)[1]).max() < 1e-6
    np.testing.assert_allclose(detector.log_odds(x), np.tanh((x - detector.mean) / detector.scale @ net.hidden
                                                             + net.hidden_bias) @ net.output + net.output_bias)


def _two_sided(seed: int, users: int = 300, fakes: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Real users' scores N(0, 1); half the fake users at +4 on the first score, half at −4 (as long and short rows)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(users + fakes, 4))
    x[users:, 0] = np.where(np.arange(fakes) % 2, 4.0, -4.0) + 0.3 * rng.normal(size=fakes)
    return x, np.arange(users + fakes) >= users


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fake_users_at_both_ends_of_a_score_need_the_perceptron(seed):
    """One regression reads a score one way, so it cannot rank both ends above the real users in between (none
    caught); the perceptron catches at least 11 of a fresh draw's 12."""
    x, fake = _two_sided(0)
    fresh, fresh_fake = _two_sided(seed)
    linear = separation(fit_logistic(x, fake).log_odds(fresh), fresh_fake)
    assert linear["auc"] < 0.65 and linear["caught"] == 0.0
    caught = separation(fit_perceptron(x, fake).log_odds(fresh), fresh_fake)
    assert caught["auc"] > 0.99 and caught["caught"] >= 11 / 12


def test_the_fit_is_where_autograds_gradient_vanishes():
    x, fake = _labelled()
    detector = fit_logistic(x, fake, l2=1e-3)
    params = torch.tensor(np.append(detector.classifier.weights, detector.classifier.bias), requires_grad=True)
    _torch_loss(params, (x - detector.mean) / detector.scale, fake, l2=1e-3).backward()
    assert np.abs(params.grad.numpy()).max() < 1e-7
    np.testing.assert_allclose(detector.mean, x.mean(axis=0))


def test_each_class_weighs_half_of_the_loss_so_more_real_users_alike_change_nothing():
    x, fake = _labelled()
    doubled, doubled_fake = np.concatenate((x, x[~fake])), np.concatenate((fake, np.zeros((~fake).sum(), bool)))
    params = np.random.default_rng(2).normal(size=5)
    loss, gradient = balanced_logistic_loss(params, x, fake)
    loss_doubled, gradient_doubled = balanced_logistic_loss(params, doubled, doubled_fake)
    assert loss_doubled == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(gradient_doubled, gradient, rtol=1e-10)


@pytest.mark.parametrize("fake", [np.zeros(5, bool), np.ones(5, bool)])
def test_a_fit_without_both_classes_is_refused(fake):
    with pytest.raises(ValueError, match="both fake and real users"):
        fit_logistic(np.zeros((5, len(FEATURES))), fake)


def test_trained_on_one_random_attack_it_catches_another_on_other_users():
    known, known_fake = random_attack_data(seed=0)
    detector = fit_detector(known, known_fake, 200)
    unseen, unseen_fake = random_attack_data(seed=1)
    assert separation(detector(unseen, 200), unseen_fake) == {"auc": 1.0, "caught": 1.0}


def test_neighbourhood_mean_on_a_hand_built_graph():
    """Users {0, 1}, {1}, {1, 2} with scores 1, 2, 4: the items' means are 1, 7/3, 4, and the users' means of their
    items' means 5/3, 7/3, 19/6."""
    train = Interactions.from_lists([[0, 1], [1], [1, 2]])
    np.testing.assert_allclose(neighbourhood_mean(train, 4, np.array([[1.0], [2.0], [4.0]]))[:, 0],
                               [5 / 3, 7 / 3, 19 / 6], rtol=1e-15)


def test_users_without_items_and_items_without_users_average_to_zero_and_the_transpose_is_the_adjoint():
    train = Interactions.from_lists([[0, 1], [], [1]])
    mean = TwoHopMean.of(train, 4)
    np.testing.assert_allclose(mean(np.array([[1.0], [5.0], [3.0]]))[:, 0], [1.5, 0.0, 2.0])
    x, y = np.random.default_rng(0).normal(size=(2, 3, 2))
    assert np.sum(mean(x) * y) == pytest.approx(np.sum(x * mean.transposed(y)), rel=1e-12)


def test_neighbourhood_mean_equals_a_loop_over_users_and_items():
    train, _ = random_attack_data(seed=2)
    rows = np.random.default_rng(3).normal(size=(train.num_users, 3))
    users_of = {i: [u for u in range(train.num_users) if i in set(train.user(u))] for i in range(200)}
    expected = [np.mean([rows[users_of[int(i)]].mean(axis=0) for i in train.user(u)], axis=0)
                for u in range(train.num_users)]
    np.testing.assert_allclose(neighbourhood_mean(train, 200, rows), expected, rtol=1e-12)


def test_the_graph_detector_describes_users_by_their_scores_and_their_neighbourhoods_and_catches_another_draw():
    known, known_fake = random_attack_data(seed=0)
    detector = fit_detector(known, known_fake, 200, describe=graph_features)
    assert detector.classifier.weights.shape == (2 * len(FEATURES),)
    np.testing.assert_allclose(graph_features(known, 200)[:, :len(FEATURES)], features(known, 200))
    unseen, unseen_fake = random_attack_data(seed=1)
    assert separation(detector(unseen, 200), unseen_fake) == {"auc": 1.0, "caught": 1.0}


@pytest.mark.parametrize("describe, fit, kind", [(features, fit_logistic, Logistic),
                                                  (graph_features, fit_perceptron, Perceptron)])
def test_one_detector_per_known_attack_scores_a_user_by_the_most_suspicious_and_catches_both_attacks(describe, fit,
                                                                                                     kind):
    """Fitted on Random-like fake users (long, unpopular, unlike anyone) and on fake users clicking only the targets
    (short, identical), one detector per attack (regressions, or perceptrons on the graph features) catches all of
    fresh draws of both; its score is the higher of the two log-odds."""
    random_like, targets_only = random_attack_data(seed=0)[0], random_attack_data(seed=0, fillers=0)[0]
    detector = fit_each(random_like.subset(np.arange(300)), [random_like, targets_only], 200, describe=describe,
                        fit=fit)
    assert all(isinstance(d.classifier, kind) for d in detector.detectors)
    for fillers in (17, 0):
        unseen, unseen_fake = random_attack_data(seed=1, fillers=fillers)
        assert separation(detector(unseen, 200), unseen_fake) == {"auc": 1.0, "caught": 1.0}
    x = describe(unseen, 200)
    np.testing.assert_array_equal(detector(unseen, 200), np.maximum(*(d.log_odds(x) for d in detector.detectors)))


def test_a_joint_detector_describes_each_known_attack_alone_and_catches_both_attacks():
    """Random-like fake users and fake users clicking only the same 3 targets: ``fit_joint`` labels the real users
    described on the clean data and each attack's fake users described with that attack alone injected (together,
    the shared targets would make each the other's neighbours); fitted so, one regression catches all of fresh draws
    of both, each arriving alone."""
    random_like, targets_only = random_attack_data(seed=0)[0], random_attack_data(seed=0, fillers=0)[0]
    clean = random_like.subset(np.arange(300))
    labelled = []

    def recording(x, fake, l2, describe):
        labelled.append((x, fake))
        return fit_logistic(x, fake, l2, describe)

    detector = fit_joint(clean, [random_like, targets_only], 200, fit=recording)
    [(x, fake)] = labelled
    expected = np.vstack((features(clean, 200), features(random_like, 200)[300:], features(targets_only, 200)[300:]))
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(fake, np.arange(312) >= 300)
    for fillers in (17, 0):
        unseen, unseen_fake = random_attack_data(seed=1, fillers=fillers)
        assert separation(detector(unseen, 200), unseen_fake) == {"auc": 1.0, "caught": 1.0}


def test_scores_of_the_same_data_are_computed_once_and_cannot_be_changed(monkeypatch):
    """Two objects holding the same lists share one read-only score matrix; other lists get their own."""
    from collections import OrderedDict

    from defenses import supervised_detector

    monkeypatch.setattr(supervised_detector, "_scores", OrderedDict())  # nothing cached before or after
    calls = []
    for name in FEATURES:
        monkeypatch.setitem(supervised_detector.DETECTORS, name,
                            lambda train, num_items, name=name: calls.append(name) or -train.lengths().astype(float))
    lists = [[0, 1], [1], [1, 2, 3]]
    first = features(Interactions.from_lists(lists), 5)
    assert features(Interactions.from_lists(lists), 5) is first and len(calls) == len(FEATURES)
    assert not first.flags.writeable
    other = features(Interactions.from_lists(lists[:2]), 5)
    assert other.shape == (2, len(FEATURES)) and len(calls) == 2 * len(FEATURES)

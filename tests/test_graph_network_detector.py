"""The graph neural network detector: its two hops equal a loop over users and items, its loss and gradient equal a
reference written with torch's layers, its fit is where the gradient vanishes, and, fitted on the attacks the
platform knows, it catches fresh draws of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defenses.graph_network_detector import (fit_graph_network, fit_graph_network_each, fit_graph_network_joint,
                                             log_odds, network_loss)
from defenses.profile_detectors import separation
from defenses.supervised_detector import WIDTH, TwoHopMean, features
from tests.helpers import random_attack_data

FEATURES = 4
SIZE = 2 * FEATURES * WIDTH + WIDTH * WIDTH + 3 * WIDTH + 1


def _params(seed: int = 0) -> np.ndarray:
    return 0.3 * np.random.default_rng(seed).normal(size=SIZE)


def _unpack(params):
    """(W_msg, b_msg, W_own, W_hop, b, w, c) sliced by hand from flat numpy or torch ``params``."""
    w_msg, b_msg = params[:FEATURES * WIDTH].reshape(FEATURES, WIDTH), params[FEATURES * WIDTH:(FEATURES + 1) * WIDTH]
    rest = params[(FEATURES + 1) * WIDTH:]
    w_own, rest = rest[:FEATURES * WIDTH].reshape(FEATURES, WIDTH), rest[FEATURES * WIDTH:]
    return (w_msg, b_msg, w_own, rest[:WIDTH * WIDTH].reshape(WIDTH, WIDTH), rest[WIDTH * WIDTH:-WIDTH - 1],
            rest[-WIDTH - 1:-1], rest[-1])


def test_log_odds_equal_a_loop_over_each_users_items_and_their_users():
    train, _ = random_attack_data(seed=2, real=40, items=60)
    z = np.random.default_rng(1).normal(size=(train.num_users, FEATURES))
    params = _params()
    w_msg, b_msg, w_own, w_hop, bias, output, output_bias = _unpack(params)
    users_of = {i: [u for u in range(train.num_users) if i in set(train.user(u))] for i in range(60)}
    expected = []
    for u in range(train.num_users):
        item_means = [np.mean([np.tanh(z[v] @ w_msg + b_msg) for v in users_of[int(i)]], axis=0)
                      for i in train.user(u)]
        expected.append(np.tanh(z[u] @ w_own + np.mean(item_means, axis=0) @ w_hop + bias) @ output + output_bias)
    got = log_odds(torch.from_numpy(params), torch.from_numpy(z), TwoHopMean.of(train, 60)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _graphs(seed: int = 0) -> tuple[list, np.ndarray]:
    """Two graphs' labelled users: graph one's real users, graph two's fake users."""
    clean_and_fake, fake = random_attack_data(seed=seed, real=40, items=60)
    other, other_fake = random_attack_data(seed=seed + 1, real=40, items=60, fillers=0)
    rng = np.random.default_rng(seed)
    graphs = [(torch.from_numpy(rng.normal(size=(train.num_users, FEATURES))), TwoHopMean.of(train, 60), users)
              for train, users in ((clean_and_fake, np.flatnonzero(~fake)), (other, np.flatnonzero(other_fake)))]
    return graphs, np.concatenate((np.zeros((~fake).sum(), bool), np.ones(other_fake.sum(), bool)))


def _dense_log_odds(flat: torch.Tensor, z: torch.Tensor, mean: TwoHopMean) -> torch.Tensor:
    """The log-odds with the two hops as one dense users × users matrix (autograd through torch's matmul only)."""
    hops = torch.from_numpy(((mean.clicks / mean.user_counts) @ (mean.clicked / mean.item_counts)).toarray())
    w_msg, b_msg, w_own, w_hop, bias, output, output_bias = _unpack(flat)
    return torch.tanh(z @ w_own + hops @ torch.tanh(z @ w_msg + b_msg) @ w_hop + bias) @ output + output_bias


def test_loss_and_gradient_equal_a_reference_with_torchs_layers():
    """The balanced loss as the mean softplus of each class, averaged, plus the penalty, on log-odds propagated by a
    dense matrix; autograd's gradient (so the sparse propagation's way back is checked too)."""
    graphs, fake = _graphs()
    params, l2 = _params(1), 0.1
    value, gradient = network_loss(params, graphs, fake, l2)
    flat = torch.tensor(params, requires_grad=True)
    logits = torch.cat([_dense_log_odds(flat, z, mean)[users] for z, mean, users in graphs])
    mask = torch.from_numpy(fake)
    reference = 0.5 * (torch.nn.functional.softplus(-logits[mask]).mean()
                       + torch.nn.functional.softplus(logits[~mask]).mean())
    w_msg, _, w_own, w_hop, _, output, _ = _unpack(flat)
    reference = reference + 0.5 * l2 * sum((w ** 2).sum() for w in (w_msg, w_own, w_hop, output))
    reference.backward()
    assert value == pytest.approx(reference.item(), rel=1e-12)
    np.testing.assert_allclose(gradient, flat.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_the_fit_is_where_the_gradient_vanishes_and_scores_are_the_fitted_log_odds():
    random_like, fake = random_attack_data(seed=0)
    network = fit_graph_network([(random_like, np.arange(random_like.num_users), fake)], 200)
    z = torch.from_numpy((features(random_like, 200) - network.mean) / network.scale)
    graphs = [(z, TwoHopMean.of(random_like, 200), np.arange(random_like.num_users))]
    assert np.abs(network_loss(network.params, graphs, fake)[1]).max() < 1e-6
    np.testing.assert_allclose(network(random_like, 200), log_odds(torch.from_numpy(network.params), *graphs[0][:2]))


@pytest.mark.parametrize("fit", [fit_graph_network_joint, fit_graph_network_each])
def test_fitted_on_two_known_attacks_it_catches_fresh_draws_of_both(fit):
    """Random-like fake users (long, unpopular, unlike anyone) and fake users clicking only 3 targets (short,
    identical), each injected alone into the same real users' data: one network on all of them, or one per attack,
    catches all of fresh draws of both, on other users and targets."""
    random_like, targets_only = random_attack_data(seed=0)[0], random_attack_data(seed=0, fillers=0)[0]
    detector = fit(random_like.subset(np.arange(300)), [random_like, targets_only], 200)
    for fillers in (17, 0):
        unseen, unseen_fake = random_attack_data(seed=1, fillers=fillers)
        assert separation(detector(unseen, 200), unseen_fake) == {"auc": 1.0, "caught": 1.0}


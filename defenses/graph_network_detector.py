"""A supervised detector of fake profiles that learns on the user–item graph: a graph neural network whose messages
are learned before they are propagated, where ``supervised_detector``'s graph forms (SGC, SIGN) average fixed scores
first and learn afterwards.

Every user is described by the unsupervised detectors' scores (``supervised_detector.features``), standardised on
the labelled users; two hops of GraphSAGE's mean aggregator (Hamilton, Ying & Leskovec, NeurIPS 2017) on the
bipartite graph then give its log-odds of being fake:

    a_u = tanh(z_u · W_msg + b_msg)               every user's message, learned
    n_u = mean over u's items i of (mean over i's users v of a_v)
    h_u = tanh(z_u · W_own + n_u · W_hop + b)     GraphSAGE's update of the user's own row and its neighbourhood's
    log-odds_u = h_u · w + c

with ``WIDTH`` units per layer, fitted by the same balanced logistic loss, L2 penalty (on the weight matrices and
w) and L-BFGS as the other supervised detectors, from a seeded start; the gradient is autograd's (float64; the
propagation's way back by scipy's sparse products), the loss and its gradient in the logits ``balanced_loss``'s.

A user's log-odds depend on its graph, so the labelled users are given with theirs (``Labelled``): the platform's
real users on its clean data and each known attack's fake users on the data with that attack alone injected
(``fit_graph_network_joint``, as ``supervised_detector.fit_joint``), or, one network per known attack, the real and
fake users of that attack's data (``fit_graph_network_each``, as ``fit_each``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from defenses.supervised_detector import (L2, WIDTH, MostSuspicious, TwoHopMean, balanced_loss, features, minimise,
                                          standardised)
from recsys.data import Interactions

Labelled = tuple[Interactions, np.ndarray, np.ndarray]  # (data, the users labelled on it, which of them are fake)


class _Propagate(torch.autograd.Function):
    """``TwoHopMean`` on a float64 tensor of messages, differentiable in them (scipy's sparse products: on ML-1M 5×
    faster than torch's sparse COO product, forward and back)."""

    @staticmethod
    def forward(ctx: Any, messages: torch.Tensor, mean: TwoHopMean) -> torch.Tensor:
        ctx.mean = mean
        return torch.from_numpy(mean(messages.detach().numpy()))

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.from_numpy(ctx.mean.transposed(gradient.numpy())), None


def _layers(params: torch.Tensor, num_features: int) -> tuple[torch.Tensor, ...]:
    """(W_msg, b_msg, W_own, W_hop, b, w, c) from the flat ``params``."""
    sizes = (num_features * WIDTH, WIDTH, num_features * WIDTH, WIDTH * WIDTH, WIDTH, WIDTH, 1)
    w_msg, b_msg, w_own, w_hop, bias, output, output_bias = torch.split(params, sizes)
    return (w_msg.reshape(num_features, WIDTH), b_msg, w_own.reshape(num_features, WIDTH),
            w_hop.reshape(WIDTH, WIDTH), bias, output, output_bias[0])


def log_odds(params: torch.Tensor, z: torch.Tensor, propagate: TwoHopMean) -> torch.Tensor:
    """Every user's log-odds of being fake, its standardised scores the rows of ``z``."""
    w_msg, b_msg, w_own, w_hop, bias, output, output_bias = _layers(params, z.shape[1])
    neighbourhood = _Propagate.apply(torch.tanh(z @ w_msg + b_msg), propagate)
    return torch.tanh(z @ w_own + neighbourhood @ w_hop + bias) @ output + output_bias


def penalty(params: torch.Tensor, num_features: int, l2: float) -> torch.Tensor:
    """``l2`` / 2 · the squared norm of the weight matrices and of w."""
    w_msg, _, w_own, w_hop, _, output, _ = _layers(params, num_features)
    return 0.5 * l2 * sum((weights ** 2).sum() for weights in (w_msg, w_own, w_hop, output))


@dataclass(frozen=True)
class GraphNetwork:
    """A fitted network: the scores' mean and scale on its labelled users and its flat parameters."""

    mean: np.ndarray
    scale: np.ndarray
    params: np.ndarray

    def __call__(self, train: Interactions, num_items: int) -> np.ndarray:
        """Every user's log-odds on ``train`` (a detector of ``profile_detectors``' signature)."""
        z = torch.from_numpy((features(train, num_items) - self.mean) / self.scale)
        with torch.no_grad():
            return log_odds(torch.from_numpy(self.params), z, TwoHopMean.of(train, num_items)).numpy()


def network_loss(params: np.ndarray, graphs: Sequence[tuple[torch.Tensor, TwoHopMean, np.ndarray]],
                 fake: np.ndarray, l2: float = L2) -> tuple[float, np.ndarray]:
    """(loss, gradient) at ``params``: ``balanced_loss`` of the labelled users' log-odds (the users of every
    (standardised scores, propagation, users) of ``graphs``, in order; ``fake`` their labels) plus ``penalty``."""
    flat = torch.tensor(params, requires_grad=True)
    logits = torch.cat([log_odds(flat, z, propagate)[users] for z, propagate, users in graphs])
    loss, residual = balanced_loss(logits.detach().numpy(), fake)
    regulariser = penalty(flat, graphs[0][0].shape[1], l2)
    (logits @ torch.from_numpy(residual) + regulariser).backward()  # the gradient of loss + regulariser
    return loss + regulariser.item(), flat.grad.numpy()


def fit_graph_network(labelled: Sequence[Labelled], num_items: int, l2: float = L2, seed: int = 0) -> GraphNetwork:
    """The network minimising ``network_loss`` on the ``labelled`` users, from weight matrices drawn N(0, 1 / fan-in)
    by ``seed``, biases 0 (a local minimum: the loss is not convex)."""
    described = [(features(train, num_items), TwoHopMean.of(train, num_items), np.asarray(users))
                 for train, users, _ in labelled]
    fake, mean, scale, _ = standardised(np.vstack([x[users] for x, _, users in described]),
                                        np.concatenate([np.asarray(is_fake) for _, _, is_fake in labelled]))
    graphs = [(torch.from_numpy((x - mean) / scale), propagate, users) for x, propagate, users in described]
    rng, columns = np.random.default_rng(seed), len(mean)
    start = np.concatenate((rng.normal(0.0, columns ** -0.5, columns * WIDTH), np.zeros(WIDTH),
                            rng.normal(0.0, (columns + WIDTH) ** -0.5, columns * WIDTH + WIDTH * WIDTH),
                            np.zeros(WIDTH), rng.normal(0.0, WIDTH ** -0.5, WIDTH), [0.0]))
    return GraphNetwork(mean, scale, minimise(network_loss, start, graphs, fake, l2))


def fit_graph_network_joint(clean: Interactions, poisoned: Sequence[Interactions], num_items: int,
                            l2: float = L2) -> GraphNetwork:
    """One network on the real users of ``clean`` and the fake users of every data of ``poisoned`` (``clean``'s
    users first, then one known attack's fake users), each on its own data."""
    real = (clean, np.arange(clean.num_users), np.zeros(clean.num_users, bool))
    fakes = [(train, np.arange(clean.num_users, train.num_users), np.ones(train.num_users - clean.num_users, bool))
             for train in poisoned]
    return fit_graph_network([real, *fakes], num_items, l2)


def fit_graph_network_each(clean: Interactions, poisoned: Sequence[Interactions], num_items: int,
                           l2: float = L2) -> MostSuspicious:
    """One network per data of ``poisoned`` on all its users (``clean``'s real users, then one known attack's)."""
    return MostSuspicious(tuple(
        fit_graph_network([(train, np.arange(train.num_users), np.arange(train.num_users) >= clean.num_users)],
                          num_items, l2) for train in poisoned))

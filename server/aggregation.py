"""Aggregation rules: how the server combines validated uploads into one step for Θ.

A rule is a callable ``(uploads) -> Σ-like gradient``; register new ones in ``AGGREGATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from recsys.models.ncf import Theta
from server.validation import Upload

AggregationRule = Callable[[Sequence[Upload], Theta], Theta]


def sum_rule(uploads: Sequence[Upload], theta: Theta) -> Theta:
    """Σ_u ∇Θ_u over every upload (eq. 6)."""
    total = {name: torch.zeros_like(value) for name, value in theta.items()}
    for upload in uploads:
        for name, grad in upload.grads.items():
            total[name] += grad.to(total[name].device)
    return total


AGGREGATIONS: dict[str, AggregationRule] = {"sum": sum_rule}


def apply_update(theta: Theta, step: Theta, lr: float) -> None:
    """Θ ← Θ − η · step, in place."""
    for name, value in theta.items():
        value.sub_(step[name], alpha=lr)

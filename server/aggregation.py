"""The aggregation interface: how the server turns the validated per-client uploads of a round into one
step for Θ. The rules themselves (sum, robust rules, clipping) are defenses, one module each under
``defenses/federated``, registered by name in ``federation.plugins.AGGREGATION_RULES``; ``--aggregation``
also takes a plug-in ``package.module:Class`` or ``path/to/file.py:Class``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from federation.config import SimulationConfig
from federation.plugins import AGGREGATION_RULES, load_class
from federation.uploads import ClientUploads
from recsys.models.ncf import NCFSpec, Theta


@dataclass(frozen=True)
class RoundInfo:
    """What a rule may know about the round besides the uploads.

    ``malicious`` is the simulation's ground truth per upload; a rule uses it only where its f policy is
    ``oracle`` (an upper bound for any defense), and the server only for diagnostics.
    """

    round: int
    targets: torch.Tensor  # int64 item ids the experiment tracks (diagnostics only)
    malicious: np.ndarray  # bool [B], aligned with the uploads


@dataclass
class Aggregate:
    """A rule's step on the sum scale (Θ ← Θ − η · step, eq. 6) and its counters for this round."""

    step: Theta
    report: dict[str, float] = field(default_factory=dict)


class AggregationRule(ABC):
    """Base class of every server aggregation rule; one instance serves a whole run (it may keep state)."""

    name: str = "custom"

    def __init__(self, config: SimulationConfig, spec: NCFSpec) -> None:
        self.config, self.spec = config, spec

    @abstractmethod
    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        """The step for Θ from the round's valid uploads (ordered by client id; possibly none)."""

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds, saved with the server's checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s output on resume."""


def load_rule(config: SimulationConfig, spec: NCFSpec) -> AggregationRule:
    """The run's aggregation rule (``config.aggregation``: a registered name or a plug-in spec)."""
    return load_class(config.aggregation, AGGREGATION_RULES, "aggregation rule", AggregationRule)(config, spec)


def apply_update(theta: Theta, step: Theta, lr: float) -> None:
    """Θ ← Θ − η · step, in place."""
    for name, value in theta.items():
        value.sub_(step[name].to(value.device), alpha=lr)

"""Model-stealing attacks on top-K recommenders (Zhu et al. 2023), by name.

Each attack is ``steal(run) -> clone``: it builds a clone (a module with ``score`` and
``score_all`` over the attacker's known users) from the stages of a ``StealingRun``, which
reads data only through the run's ``AttackerView``.
"""

from collections.abc import Callable

import torch

from attacks.stealing import pta, ptaq, ptd, ptq, qsd
from attacks.stealing.base import StealingRun, StealingSettings

StealingAttack = Callable[[StealingRun], torch.nn.Module]

ATTACKS: dict[str, StealingAttack] = {"qsd": qsd.steal, "ptd": ptd.steal, "ptq": ptq.steal, "pta": pta.steal,
                                      "ptaq": ptaq.steal}

__all__ = ["ATTACKS", "StealingAttack", "StealingRun", "StealingSettings"]

"""Central-mode data-poisoning attacks: each generates fake user profiles from the attacker's
knowledge (``knowledge.AttackerKnowledge``) with one interface,
``generate(knowledge, targets, num_fake, num_fillers, rng) -> FakeProfiles``, so the same profiles
can be injected into a central model or, later, played by fake federated clients.

A new attack is one module here plus an entry in ``ATTACKS``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks.data_poisoning import aush, average, bandwagon, pga, random, tna
from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles

Attack = Callable[[AttackerKnowledge, np.ndarray, int, int, np.random.Generator], FakeProfiles]

ATTACKS: dict[str, Attack] = {
    "random": random.generate,
    "average": average.generate,
    "bandwagon": bandwagon.generate,
    "aush": aush.generate,
    "pga": pga.generate,
    "tna": tna.generate,
}


def generate_profiles(name: str, knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int,
                      num_fillers: int, rng: np.random.Generator) -> FakeProfiles:
    """Run attack ``name`` after checking its inputs."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0 or targets.min() < 0 or targets.max() >= knowledge.num_items:
        raise ValueError(f"target items must be non-empty ids in [0, {knowledge.num_items}), got {targets.tolist()}")
    if num_fake < 1 or not 1 <= num_fillers <= knowledge.num_items - len(np.unique(targets)):
        raise ValueError(f"need >= 1 fake user and 1..{knowledge.num_items - len(targets)} fillers, "
                         f"got {num_fake} and {num_fillers}")
    return ATTACKS[name](knowledge, targets, num_fake, num_fillers, rng)

"""Random attack (Lam & Riedl 2004): random fillers rated from the global rating distribution N(μ, σ)."""

from __future__ import annotations

import numpy as np

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble, draw_fillers


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    fillers = draw_fillers(rng, num_fake, knowledge.num_items, num_fillers, targets)
    ratings = rng.normal(knowledge.ratings.mean(), knowledge.ratings.std(), size=fillers.shape)
    return assemble(fillers, ratings, targets, knowledge.grid)

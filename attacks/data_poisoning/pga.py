"""PGA (Li et al. 2016), integrity attack: projected gradient ascent on the fake ratings to raise
the (poisoned) surrogate's predicted ratings of the target items for all known users; fillers are
the items with the largest optimised ratings (``surrogate_ascent``)."""

from __future__ import annotations

import numpy as np
import torch

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles
from attacks.data_poisoning.surrogate_ascent import optimise_profiles


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    users = torch.as_tensor(np.unique(knowledge.users))
    target_index = torch.as_tensor(targets, dtype=torch.int64)

    def mean_target_rating(user_factors: torch.Tensor, item_factors: torch.Tensor) -> torch.Tensor:
        return (user_factors[users] @ item_factors[target_index].T).mean()

    return optimise_profiles(knowledge, targets, num_fake, num_fillers, mean_target_rating, rng)

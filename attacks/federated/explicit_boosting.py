"""EB, explicit boosting (the prior-knowledge-free component of PipAttack, Zhang et al. 2022), as the
federated paper's code runs it: a fake client whose local positives are the target items and which
otherwise trains exactly like a benign client (BCE over the targets and its r sampled negatives, its own
p_u updated by eq. 5). ``eb-promote`` is the promotion-only variant.
"""

from __future__ import annotations

import numpy as np

from attacks.federated.base import ProfileClient


class ExplicitBoosting(ProfileClient):
    """EB: honest training on a profile made of the targets alone."""

    name = "eb"

    @classmethod
    def fake_profiles(cls, num_clients, targets, num_items, config, rng) -> list[np.ndarray]:
        return [np.asarray(targets, dtype=np.int64) for _ in range(num_clients)]

"""RA, random attack (Kapoor et al. 2017) as fake federated clients.

A fake user's local data are the target items plus items drawn uniformly at random (``--fake-profile-items``
in all, 30 by default); it trains exactly like a benign client (BCE with r sampled negatives per positive).
"""

from __future__ import annotations

import numpy as np

from attacks.federated.base import ProfileClient


class RandomAttack(ProfileClient):
    """RA: honest training on a profile of the targets and random fillers."""

    name = "ra"

    @classmethod
    def fake_profiles(cls, num_clients, targets, num_items, config, rng) -> list[np.ndarray]:
        targets = np.asarray(targets, dtype=np.int64)
        candidates = np.setdiff1d(np.arange(num_items), targets)
        fillers = max(0, min(config.fake_profile_items - len(targets), len(candidates)))
        return [np.concatenate([targets, rng.choice(candidates, size=fillers, replace=False)])
                for _ in range(num_clients)]

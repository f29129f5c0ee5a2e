"""``profile:NAME``: fake federated clients that train exactly like benign clients (BCE over their profile and r sampled
negatives, their own p_u) on the fake profiles of an implicit data-poisoning attack of ``attacks.implicit``
(``random``, ``bandwagon``, ``targets-only``, ``random-floor``, ``popular-floor``, ``revadv``, ``revadv-popular``,
``rapu``, ``dada``, each gradient attack ``+sharpap``): RA generalised to any profile generator. For the same
training lists, targets, number of fake users, budget (``--fake-profile-items``) and seed they are exactly the
profiles the central experiments inject, so one attack can be played as data poisoning in central training and by
federated fake clients. The gradient attacks run with the settings of ``profile_preset``
(``attacks.implicit.PRESETS``; default ``lean``), and a process generates each set of profiles once (a central cell
and a federated cell of the same setting in one sweep worker share them).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from attacks.federated.base import ProfileClient
from attacks.implicit import PRESETS, FakeProfiles, PoisonSetting, generate
from federation.config import SimulationConfig
from federation.plan import dataset_for, dataset_identity


def implicit_profiles(attack: str, config: SimulationConfig, targets: np.ndarray, num_fake: int) -> FakeProfiles:
    """The ``num_fake`` profiles implicit attack ``attack`` generates for the run's training data, ``targets`` and
    budget (``fake_profile_items``) from the run's seed and ``profile_preset``: what central training injects and
    fake clients train on."""
    return _generate(attack, dataset_identity(config), config.seed, tuple(int(t) for t in targets), num_fake,
                     config.fake_profile_items, config.profile_preset)


@lru_cache(maxsize=64)  # small lists; a sweep worker meets every (ρ, attack) of a seed before reusing one
def _generate(attack: str, dataset_key: str, seed: int, targets: tuple[int, ...], num_fake: int, budget: int,
              preset: str) -> FakeProfiles:
    dataset = dataset_for(SimulationConfig.from_json(dataset_key))
    setting = PoisonSetting(dataset.train, dataset.num_items, np.asarray(targets, dtype=np.int64), num_fake, budget)
    return generate(attack, setting, PRESETS[preset], seed)[0]


class ImplicitProfileClient(ProfileClient):
    """A fake client on the profile an implicit attack (``attack``) generates for the run's training data."""

    attack = "random"

    @classmethod
    def fake_profiles(cls, num_clients, targets, num_items, config, rng) -> list[np.ndarray]:
        lists = implicit_profiles(cls.attack, config, targets, num_clients).lists
        return [lists.user(f) for f in range(num_clients)]


class RandomProfiles(ImplicitProfileClient):
    name, attack = "profile:random", "random"


class BandwagonProfiles(ImplicitProfileClient):
    name, attack = "profile:bandwagon", "bandwagon"


class TargetsOnlyProfiles(ImplicitProfileClient):
    name, attack = "profile:targets-only", "targets-only"


class RandomFloorProfiles(ImplicitProfileClient):
    name, attack = "profile:random-floor", "random-floor"


class PopularFloorProfiles(ImplicitProfileClient):
    name, attack = "profile:popular-floor", "popular-floor"


class RevAdvProfiles(ImplicitProfileClient):
    name, attack = "profile:revadv", "revadv"


class SharpAPProfiles(ImplicitProfileClient):
    name, attack = "profile:revadv+sharpap", "revadv+sharpap"


class RevAdvPopularProfiles(ImplicitProfileClient):
    name, attack = "profile:revadv-popular", "revadv-popular"


class RevAdvPopularSharpAPProfiles(ImplicitProfileClient):
    name, attack = "profile:revadv-popular+sharpap", "revadv-popular+sharpap"


class RAPUProfiles(ImplicitProfileClient):
    name, attack = "profile:rapu", "rapu"


class RAPUSharpAPProfiles(ImplicitProfileClient):
    name, attack = "profile:rapu+sharpap", "rapu+sharpap"


class DADAProfiles(ImplicitProfileClient):
    name, attack = "profile:dada", "dada"


class DADASharpAPProfiles(ImplicitProfileClient):
    name, attack = "profile:dada+sharpap", "dada+sharpap"

"""Every client's local data: benign users from the dataset, then the malicious clients injected by
``--attack`` with the local profiles their strategy gives them (``ClientStrategy.fake_profiles``).

The benign users' negatives and initial embeddings are exactly those of a run without the attack
(the injected clients draw from their own random streams).
"""

from __future__ import annotations

import numpy as np

from clients.local_data import LocalData, build_local_data, concat_local_data
from clients.strategy import load_strategy_class
from federation.config import ConfigError, SimulationConfig
from federation.plan import Plan
from recsys.data.dataset import Dataset, Interactions

FAKE_PROFILE_STREAM = 5
FAKE_CLIENT_STREAMS = (3, 4)  # negatives, initial embeddings of injected clients


def fake_client_dataset(config: SimulationConfig, plan: Plan) -> Dataset:
    """The injected clients' local data as a dataset of ``len(plan.malicious_ids)`` users (no test items)."""
    count = len(plan.malicious_ids)
    strategy = load_strategy_class(config.attack) if count else None
    rng = np.random.default_rng([config.seed, FAKE_PROFILE_STREAM])
    profiles = strategy.fake_profiles(count, np.asarray(plan.targets), plan.num_items, config, rng) if strategy else []
    if len(profiles) != count:
        raise ConfigError(f"{config.attack}.fake_profiles returned {len(profiles)} profiles for {count} clients")
    for profile in profiles:
        if len(profile) and (np.min(profile) < 0 or np.max(profile) >= plan.num_items or len(np.unique(profile)) != len(profile)):
            raise ConfigError(f"{config.attack}.fake_profiles must give distinct item ids in [0, {plan.num_items})")
    train = Interactions.from_lists([np.asarray(p, dtype=np.int64) for p in profiles])
    empty = Interactions(np.zeros(count + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Dataset("injected clients", count, plan.num_items, train, empty)


def build_client_data(config: SimulationConfig, plan: Plan, dataset: Dataset, clients: np.ndarray) -> LocalData:
    """Local data of ``clients`` (a contiguous ascending id range, possibly spanning benign and injected ones)."""
    benign = clients[clients < plan.num_benign]
    injected = clients[clients >= plan.num_benign]
    parts = [build_local_data(dataset, benign, config.dim, config.negatives, config.seed)]
    if len(injected):
        fake = build_local_data(fake_client_dataset(config, plan), injected - plan.num_benign, config.dim,
                                config.negatives, config.seed, FAKE_CLIENT_STREAMS)
        parts.append(LocalData(injected, fake.train, fake.test, fake.negatives, fake.embeddings))
    return concat_local_data(parts) if len(parts) > 1 else parts[0]

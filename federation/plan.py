"""What both sides derive from the configuration before training: population, targets, shards."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from federation.assignments import StrategyAssignment
from federation.config import ConfigError, SimulationConfig
from recsys.data import load_dataset
from recsys.data.convert import resplit_at_random
from recsys.data.dataset import Dataset


@lru_cache(maxsize=2)
def _load(config_json: str) -> Dataset:
    config = SimulationConfig.from_json(config_json)
    options = {}
    if config.dataset == "synthetic":
        options = dict(num_users=config.synthetic_users, num_items=config.synthetic_items,
                       mean_items_per_user=config.synthetic_items_per_user, seed=config.seed)
    dataset = load_dataset(config.dataset, data_dir=config.data_dir or None, **options)
    return dataset if config.split_seed < 0 else resplit_at_random(dataset, config.split_seed)


def dataset_identity(config: SimulationConfig) -> str:
    """The fields of ``config`` that decide its dataset (the seed only for synthetic data), as a JSON key."""
    keys = ("dataset", "data_dir", "synthetic_users", "synthetic_items", "synthetic_items_per_user", "split_seed")
    identity = {k: getattr(config, k) for k in keys}
    identity["seed"] = config.seed if config.dataset == "synthetic" else 0
    return SimulationConfig.from_mapping(identity).to_json()


def dataset_for(config: SimulationConfig) -> Dataset:
    """The run's dataset, loaded once per process."""
    return _load(dataset_identity(config))


@dataclass(frozen=True)
class Plan:
    """The population (benign users, then the injected malicious clients), the item count, the target
    items, every client's strategy assignment and the contiguous client range of every shard."""

    num_clients: int  # benign + malicious
    num_items: int
    targets: tuple[int, ...]
    shard_starts: tuple[int, ...]  # shard k hosts clients [starts[k], starts[k+1])
    num_benign: int
    assignments: tuple[StrategyAssignment, ...]  # --client-strategy ones, then the attack's

    @property
    def num_shards(self) -> int:
        return len(self.shard_starts) - 1

    @property
    def malicious_ids(self) -> range:
        """Clients injected by ``--attack``: ids N_benign .. num_clients − 1."""
        return range(self.num_benign, self.num_clients)

    def shard_range(self, shard: int) -> np.ndarray:
        return np.arange(self.shard_starts[shard], self.shard_starts[shard + 1], dtype=np.int64)

    def shard_of(self, client_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.shard_starts), client_ids, side="right") - 1


def num_malicious(config: SimulationConfig, num_benign: int) -> int:
    """⌊N_benign · ρ⌋ clients are injected when an attack is configured."""
    return 0 if config.attack == "none" else int(np.floor(num_benign * config.malicious_frac + 1e-9))


def make_plan(config: SimulationConfig, dataset: Dataset) -> Plan:
    targets = config.targets or tuple(int(i) for i in dataset.least_popular_items(config.num_targets))
    bad = [t for t in targets if t >= dataset.num_items]
    if bad:
        raise ConfigError(f"target items {bad} do not exist: {dataset.name} has items 0..{dataset.num_items - 1}")
    benign = dataset.num_users
    total = benign + num_malicious(config, benign)
    assignments = config.strategy_assignments()
    if total > benign:
        assignments += (StrategyAssignment(config.attack, tuple(range(benign, total))),)
    shards = min(config.resolved_shards(), total)
    starts = np.linspace(0, total, shards + 1).round().astype(int)
    return Plan(total, dataset.num_items, targets, tuple(int(s) for s in starts), benign, assignments)

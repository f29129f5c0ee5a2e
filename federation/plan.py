"""What both sides derive from the configuration before training: population, targets, shards."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from federation.config import ConfigError, SimulationConfig
from recsys.data import load_dataset
from recsys.data.dataset import Dataset


@lru_cache(maxsize=2)
def _load(config_json: str) -> Dataset:
    config = SimulationConfig.from_json(config_json)
    options = {}
    if config.dataset == "synthetic":
        options = dict(num_users=config.synthetic_users, num_items=config.synthetic_items,
                       mean_items_per_user=config.synthetic_items_per_user, seed=config.seed)
    return load_dataset(config.dataset, data_dir=config.data_dir or None, **options)


def dataset_for(config: SimulationConfig) -> Dataset:
    """The run's dataset, loaded once per process (only the fields that decide the dataset matter)."""
    keys = ("dataset", "data_dir", "synthetic_users", "synthetic_items", "synthetic_items_per_user")
    identity = {k: getattr(config, k) for k in keys}
    identity["seed"] = config.seed if config.dataset == "synthetic" else 0
    return _load(SimulationConfig.from_mapping(identity).to_json())


@dataclass(frozen=True)
class Plan:
    """Population size, item count, target items and the contiguous client range of every shard."""

    num_clients: int
    num_items: int
    targets: tuple[int, ...]
    shard_starts: tuple[int, ...]  # shard k hosts clients [starts[k], starts[k+1])

    @property
    def num_shards(self) -> int:
        return len(self.shard_starts) - 1

    def shard_range(self, shard: int) -> np.ndarray:
        return np.arange(self.shard_starts[shard], self.shard_starts[shard + 1], dtype=np.int64)

    def shard_of(self, client_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.shard_starts), client_ids, side="right") - 1


def make_plan(config: SimulationConfig, dataset: Dataset) -> Plan:
    targets = config.targets or tuple(int(i) for i in dataset.least_popular_items(config.num_targets))
    bad = [t for t in targets if t >= dataset.num_items]
    if bad:
        raise ConfigError(f"target items {bad} do not exist: {dataset.name} has items 0..{dataset.num_items - 1}")
    shards = min(config.resolved_shards(), dataset.num_users)
    starts = np.linspace(0, dataset.num_users, shards + 1).round().astype(int)
    return Plan(dataset.num_users, dataset.num_items, targets, tuple(int(s) for s in starts))

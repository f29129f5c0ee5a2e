"""Small builders shared by the tests."""

from __future__ import annotations

import numpy as np
import torch

from clients.local_data import LocalData, sample_negatives
from clients.shard import Shard
from federation.config import SimulationConfig
from recsys.data.dataset import Interactions
from recsys.models.ncf import NCFSpec, init_theta


def random_shard(num_users: int = 12, num_items: int = 40, dtype: torch.dtype = torch.float64, seed: int = 0,
                 strategies: list[str] | None = None, strategy_index: np.ndarray | None = None,
                 config_overrides: dict | None = None) -> tuple[Shard, dict]:
    """A shard of users with 2–9 random train items each, plus Θ for it."""
    rng = np.random.default_rng(seed)
    train = Interactions.from_lists([rng.choice(num_items, rng.integers(2, 10), replace=False) for _ in range(num_users)])
    test = Interactions.from_lists([rng.choice(num_items, 2, replace=False) for _ in range(num_users)])
    negatives = sample_negatives(train, num_items, 4, rng)
    embeddings = (rng.standard_normal((num_users, 8)) * 0.1).astype(np.float32)
    data = LocalData(np.arange(num_users, dtype=np.int64), train, test, negatives, embeddings)
    spec = NCFSpec(num_items)
    config = SimulationConfig(lr=0.05, seed=seed, **(config_overrides or {}))
    shard = Shard(data, config, num_items, strategies or ["honest"],
                  strategy_index if strategy_index is not None else np.zeros(num_users, np.int64), torch.device("cpu"))
    shard.embeddings = shard.embeddings.to(dtype)
    theta = {k: v.to(dtype) for k, v in init_theta(spec, torch.Generator().manual_seed(seed)).items()}
    theta["item_emb"] *= 10  # make scores spread out
    return shard, theta


def random_samples(count: int, num_rows: int, num_items: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(owner, items, labels, weights) of ``count`` random weighted BCE samples, float64."""
    gen = torch.Generator().manual_seed(seed)
    owner = torch.randint(0, num_rows, (count,), generator=gen)
    items = torch.randint(0, num_items, (count,), generator=gen)
    labels = torch.randint(0, 2, (count,), generator=gen).to(torch.float64)
    return owner, items, labels, torch.rand(count, generator=gen, dtype=torch.float64)


def client_gradient(uploads, position: int, num_items: int) -> dict:
    """The dense Θ-shaped gradient of the client at ``position`` of ``uploads``."""
    rows = slice(int(uploads.row_indptr[position]), int(uploads.row_indptr[position + 1]))
    item = uploads.row_values.new_zeros((num_items, uploads.row_values.shape[1]))
    item[uploads.row_items[rows]] = uploads.row_values[rows]
    return {"item_emb": item, **{name: value[position] for name, value in uploads.dense.items()}}


def random_attack_data(seed: int, real: int = 300, fake: int = 6, items: int = 200,
                       fillers: int = 17) -> tuple[Interactions, np.ndarray]:
    """Real users drawing their items by a Zipf-like popularity, plus fake users clicking 3 targets and ``fillers``
    uniform fillers (a Random attack; 0: the targets alone)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1)
    lists = [sorted(rng.choice(items, size=rng.integers(10, 30), replace=False, p=popularity / popularity.sum()))
             for _ in range(real)]
    targets = rng.choice(items, 3, replace=False)
    fillers = [rng.choice(np.setdiff1d(np.arange(items), targets), fillers, replace=False) for _ in range(fake)]
    lists += [sorted(np.concatenate((targets, row))) for row in fillers]
    return Interactions.from_lists([[int(i) for i in row] for row in lists]), np.arange(real + fake) >= real

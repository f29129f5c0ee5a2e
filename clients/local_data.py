"""What a shard of clients holds locally: interactions, fixed negatives, user embeddings.

Random draws are made per block of ``BLOCK`` consecutive users from a generator seeded by
(seed, stream, block), so a user's negatives and initial embedding do not depend on how
users are split into shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import Dataset, Interactions

BLOCK = 1024
NEGATIVES_STREAM = 1
EMBEDDING_STREAM = 2


def block_rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, block])


def sample_negatives(train: Interactions, num_items: int, ratio: int, rng: np.random.Generator) -> Interactions:
    """``ratio`` negatives per positive, uniform over the items the user has not interacted with in train
    (sampled once, as the paper's clients do)."""
    lengths = train.lengths()
    if np.any(lengths >= num_items):
        raise ValueError("a user has interacted with every item: no negatives can be sampled")
    neg_lengths = lengths * ratio
    owner = np.repeat(np.arange(train.num_users, dtype=np.int64), neg_lengths)
    positives = np.unique(train.row_ids() * num_items + train.items)
    items = rng.integers(0, num_items, size=len(owner))
    todo = np.arange(len(owner)) if len(positives) else np.zeros(0, np.int64)
    while len(todo):
        keys = owner[todo] * num_items + items[todo]
        pos = np.searchsorted(positives, keys).clip(max=len(positives) - 1)
        todo = todo[positives[pos] == keys]
        items[todo] = rng.integers(0, num_items, size=len(todo))
    indptr = np.zeros(train.num_users + 1, dtype=np.int64)
    np.cumsum(neg_lengths, out=indptr[1:])
    return Interactions(indptr, items)


@dataclass(frozen=True)
class LocalData:
    """Private data of a contiguous range of users: train/test positives, negatives, initial embeddings."""

    users: np.ndarray  # global user ids, int64
    train: Interactions
    test: Interactions
    negatives: Interactions
    embeddings: np.ndarray  # float32 [len(users), dim]


def build_local_data(dataset: Dataset, users: np.ndarray, dim: int, negative_ratio: int, seed: int,
                     streams: tuple[int, int] = (NEGATIVES_STREAM, EMBEDDING_STREAM)) -> LocalData:
    """The local data of ``users`` (a contiguous, ascending id range of ``dataset``'s users); ``streams``
    name the random streams of the negatives and the initial embeddings."""
    if len(users) == 0:
        empty = Interactions(np.zeros(1, np.int64), np.zeros(0, np.int64))
        return LocalData(users, empty, empty, empty, np.zeros((0, dim), np.float32))
    first_block, last_block = users[0] // BLOCK, users[-1] // BLOCK
    negatives, embeddings = [], []
    for block in range(first_block, last_block + 1):
        block_users = np.arange(block * BLOCK, min((block + 1) * BLOCK, dataset.num_users))
        keep = (block_users >= users[0]) & (block_users <= users[-1])
        block_train = dataset.train.subset(block_users)
        block_neg = sample_negatives(block_train, dataset.num_items, negative_ratio, block_rng(seed, streams[0], block))
        negatives.append(block_neg.subset(np.flatnonzero(keep)))
        emb = block_rng(seed, streams[1], block).standard_normal((len(block_users), dim)) * 0.01
        embeddings.append(emb[keep].astype(np.float32))
    return LocalData(
        users=users,
        train=dataset.train.subset(users),
        test=dataset.test.subset(users),
        negatives=concat_rows(negatives),
        embeddings=np.concatenate(embeddings),
    )


def concat_local_data(parts: list[LocalData]) -> LocalData:
    """Stack the local data of consecutive user ranges."""
    return LocalData(
        users=np.concatenate([p.users for p in parts]),
        train=concat_rows([p.train for p in parts]),
        test=concat_rows([p.test for p in parts]),
        negatives=concat_rows([p.negatives for p in parts]),
        embeddings=np.concatenate([p.embeddings for p in parts]),
    )


def concat_rows(parts: list[Interactions]) -> Interactions:
    """Stack CSR blocks row-wise."""
    lengths = np.concatenate([p.lengths() for p in parts])
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return Interactions(indptr, np.concatenate([p.items for p in parts]))

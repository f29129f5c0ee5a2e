"""The popular-item mixing defense (section 6): every returned top-K list has ``n_mix`` of its
entries, at random positions, replaced by items drawn at random from the ``top`` most popular
ones (popularity = interactions in the target model's training data), never an item already in
the list or one the user interacted with (a user with fewer than ``n_mix`` such items among the
popular ones gets all it has). It wraps a query oracle."""

from __future__ import annotations

import numpy as np
import torch

from central.stealing_data import QueryOracle

POPULAR_POOL = 100


class MixingDefense:
    """A query oracle whose answers are the wrapped oracle's with popular items mixed in."""

    def __init__(self, oracle: QueryOracle, popularity: np.ndarray, n_mix: int, seed: int,
                 top: int = POPULAR_POOL) -> None:
        if n_mix < 0 or top < 1:
            raise ValueError(f"n_mix must be >= 0 and top >= 1, got {n_mix} and {top}")
        self.oracle, self.n_mix = oracle, n_mix
        self.interacted = oracle.interacted
        self.popular = torch.from_numpy(np.argsort(-popularity, kind="stable")[:top].copy())
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, users: torch.Tensor, k: int) -> torch.Tensor:
        lists = self.oracle.query(users, k)
        if self.n_mix == 0:
            return lists
        if self.n_mix > k:
            raise ValueError(f"cannot mix {self.n_mix} items into lists of length {k}")
        candidates = self.popular[None, :].expand(len(users), -1)
        in_list = (candidates[:, :, None] == lists[:, None, :]).any(-1)
        unusable = in_list | self.interacted[users[:, None], candidates]
        # a random order of the usable candidates (unusable ones last), and random positions
        keys = torch.rand(candidates.shape, generator=self.generator) + unusable
        picked = candidates.gather(1, keys.argsort(1)[:, : self.n_mix])
        positions = torch.rand(lists.shape, generator=self.generator).argsort(1)[:, : self.n_mix]
        # a user who has seen (or is shown) nearly all popular items gets only the usable ones
        usable = (~unusable).sum(1, keepdim=True)
        picked = torch.where(torch.arange(self.n_mix)[None, :] < usable, picked, lists.gather(1, positions))
        return lists.scatter(1, positions, picked)

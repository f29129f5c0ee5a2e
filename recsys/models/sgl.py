"""SGL-ED (Wu et al. SIGIR'21): LightGCN plus a contrastive task between two graph views made
by edge dropout (ratio 0.1, redrawn every epoch); InfoNCE (τ = 0.2) over the batch's distinct
users and distinct positive items, weight λ_ssl = 0.1; L = 2 (SELFRec's SGL.yaml)."""

from __future__ import annotations

import torch

from recsys.models.graph import drop_edges, normalised_adjacency
from recsys.models.lightgcn import LightGCN


class SGL(LightGCN):
    layers = 2
    drop_ratio = 0.1
    ssl_weight = 0.1

    def begin_epoch(self, generator: torch.Generator) -> None:
        self.dropped = [normalised_adjacency(*drop_edges(*self.edges, self.drop_ratio, generator),
                                             self.num_users, self.num_items, self.user_emb.dtype) for _ in range(2)]

    def views(self):
        if not hasattr(self, "dropped"):
            raise RuntimeError("SGL needs begin_epoch(generator) before training")
        return self.propagated(self.dropped[0]), self.propagated(self.dropped[1])

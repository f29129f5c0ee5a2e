"""SimGCL (Yu et al. SIGIR'22): no graph augmentation; two views made by adding uniform noise of
norm ε = 0.1 in the direction of each layer's sign (e ← e + ε·sign(e)⊙Δ/‖Δ‖); InfoNCE (τ = 0.2)
over the batch's distinct users and items, λ = 0.5; L = 2; the layer mean leaves out E^(0)
(as SELFRec's SimGCL encoder does)."""

from __future__ import annotations

import torch

from recsys.models.lightgcn import LightGCN


class SimGCL(LightGCN):
    layers = 2
    include_ego = False
    noise = 0.1
    ssl_weight = 0.5

    def begin_epoch(self, generator: torch.Generator) -> None:
        self.generator = generator

    def views(self):
        if not hasattr(self, "generator"):
            raise RuntimeError("SimGCL needs begin_epoch(generator) before training")
        return tuple(self.propagated(noise=self.noise, generator=self.generator) for _ in range(2))

"""``dp-clip``: DP-FedAvg's server step (McMahan et al., ICLR 2018; Gaussian mechanism with fixed clipping).

Each client's whole upload (its item rows and MLP together, in either scope) is clipped to L2 ≤ τ, the
clipped uploads are summed, and N(0, (z·τ)²) noise is added to every coordinate of every item row that
received an upload and of every MLP tensor. τ = ``clip_row`` (it bounds a whole upload here), or when 0 the
``clip_quantile`` quantile of the round's upload norms (adaptive clipping, Andrew et al. 2021, without its
private quantile estimate); z = ``dp_noise_multiplier``. The noise comes from a generator seeded by
(``seed``, round), on the CPU, so a run reproduces on any device. No privacy accounting is done.
"""

from __future__ import annotations

import numpy as np
import torch

from federation.uploads import ClientUploads
from recsys.models.ncf import ITEM_EMBEDDING
from server.aggregation import Aggregate, AggregationRule, RoundInfo


class DPClip(AggregationRule):
    """Σ_u clip(∇Θ_u, τ) + N(0, (zτ)²) on every touched coordinate."""

    name = "dp-clip"

    def aggregate(self, uploads: ClientUploads, info: RoundInfo) -> Aggregate:
        norms = uploads.squared_norms().sqrt()
        self.bound = self.config.clip_row or (float(torch.quantile(norms.double(), self.config.clip_quantile))
                                              if len(norms) else 0.0)
        scale = self.bound / norms.clamp(min=max(self.bound, 1e-30))
        clipped = ClientUploads(uploads.client_ids,
                                {k: v * scale.view(-1, *[1] * (v.dim() - 1)) for k, v in uploads.dense.items()},
                                uploads.row_indptr, uploads.row_items,
                                uploads.row_values * scale[uploads.row_owner()][:, None], uploads.losses)
        step = clipped.summed(self.spec.num_items)
        noise_std = self.config.dp_noise_multiplier * self.bound
        if uploads.num_clients and noise_std > 0:
            seed = int(np.random.SeedSequence([self.config.seed, info.round]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
            touched = torch.bincount(uploads.row_items, minlength=self.spec.num_items) > 0
            for name, value in step.items():
                noise = torch.randn(value.shape, generator=generator, dtype=value.dtype) * noise_std
                if name == ITEM_EMBEDDING:
                    noise[~touched.cpu()] = 0
                value += noise.to(value.device)
        clipped_mask = norms > self.bound
        malicious = torch.as_tensor(info.malicious, dtype=torch.bool, device=norms.device)
        return Aggregate(step, {"clipped_uploads": int(clipped_mask.sum()),
                                "clipped_malicious_uploads": int((clipped_mask & malicious).sum()),
                                "noise_std": noise_std, "clip_upload": self.bound})

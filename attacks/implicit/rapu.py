"""RAPU-G (Zhang, Tian, Li et al. KDD'21) on complete data: RevAdv's outer loop (``revadv.run``) with
RAPU's adversarial objective and projection, on either WMF surrogate, so that SharpAP wraps it as it
wraps RevAdv.

* Objective (RAPU's ``WMW_loss_sigmoid``): a smoothed Wilcoxon–Mann–Whitney loss that pushes every
  target above each real user's current top K: L = mean over the real users u, the targets t and the
  K = 50 highest-scored items j of u (training items included, as RAPU's code ranks them) of
  σ((s_uj − s_ut)/b), b = 1 (its WMF trainer's default). RAPU sums; the mean only rescales the
  row-normalised hypergradient (and SharpAP's normalised steps).
* Projection: exactly the budget's top-k entries per fake row, every fake row clicking the targets
  (RAPU's top-k projection with the targets clicked); the popularity prior RAPU can add before the
  top-k is off.
* Left out: RAPU's EM re-weighting of the real users' loss in the last unrolled epochs (a probabilistic
  model of which entries are observed and unperturbed). It models an attacker who sees incomplete,
  perturbed data; here, as in RevAdv and SharpAP's setting, the attacker sees the training data.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from attacks.implicit.revadv import RevAdvSettings
from attacks.implicit.surrogate import user_mean

WMW_TOP = 50  # K: each real user's highest-scored items the targets are pushed above
WMW_B = 1.0  # b: the sigmoid's width


@user_mean
def wmw_loss(scores: torch.Tensor, targets: torch.Tensor, top: int = WMW_TOP, b: float = WMW_B) -> torch.Tensor:
    """RAPU's L_adv on the real users' ``scores`` [n, m]: the mean of σ((s_uj − s_ut)/b) over u, t and u's ``top``
    highest-scored j."""
    best = scores.topk(min(top, scores.shape[1]), dim=1).values
    return torch.sigmoid((best[:, None, :] - scores[:, targets, None]) / b).mean()


def loop_settings(settings: RevAdvSettings) -> RevAdvSettings:
    """RevAdv's outer-loop ``settings`` with RAPU's projection: the budget's top-k, the targets clicked."""
    return replace(settings, threshold=None, click_targets=True)

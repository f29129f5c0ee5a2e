"""Settings of the gradient attacks (surrogate, outer loop, SharpAP), their named presets and the
surrogate registry.

Surrogates, by name (``SURROGATE_PRESETS``):
``wmf``: RevAdv's best surrogate, WMF trained by Adam with the last epochs unrolled (``PRESETS``);
``wmf-als``: RevAdv's WMF-ALS surrogate, differentiated through its last item solve, with the outer-loop
settings RevAdv pairs with it (threshold 0.1, the fake users click the targets).

Presets of each: ``paper``: RevAdv's hyper-parameters (for ``wmf``: d = 128, 50 epochs with the last 10
unrolled, re-fitted from scratch every outer iteration: about 16 minutes of one core and 3 GiB for a RevAdv
run on ML-1M); ``lean``: d = 64 (for ``wmf``: a first fit of 40 epochs, then warm-started fits of 10 plain +
3 unrolled epochs, about 4 minutes of one core and 2 GiB); ``ci``: a synthetic end-to-end check in seconds.
A new surrogate is one module (settings + a class with ``ThetaSurrogate``'s interface and ``fit``) plus an
entry in ``SURROGATES`` and ``SURROGATE_PRESETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from attacks.implicit.profiles import PoisonSetting
from attacks.implicit.revadv import RevAdvSettings, Surrogate
from attacks.implicit.sharpap import SharpSettings
from attacks.implicit.surrogate import Objective, softmax_loss
from attacks.implicit.wmf_als_surrogate import ALSSettings, ALSSurrogate
from attacks.implicit.wmf_surrogate import WMFSettings, WMFSurrogate

SurrogateSettings = WMFSettings | ALSSettings


@dataclass(frozen=True)
class AttackOptions:
    """Settings of the gradient attacks (the heuristics need none)."""

    surrogate: SurrogateSettings = field(default_factory=WMFSettings)
    revadv: RevAdvSettings = field(default_factory=RevAdvSettings)
    sharp: SharpSettings = field(default_factory=SharpSettings)
    device: str = "cpu"  # where the surrogate trains and is differentiated (the outer loop's X stays on the CPU)


SURROGATES: dict[type, tuple[str, Callable[..., Surrogate]]] = {  # settings type -> (name, class)
    WMFSettings: ("wmf", WMFSurrogate),
    ALSSettings: ("wmf-als", ALSSurrogate),
}


def settings_type(name: str) -> type:
    """The settings class of the surrogate called ``name``."""
    for kind, (known, _) in SURROGATES.items():
        if known == name:
            return kind
    raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(n for n, _ in SURROGATES.values())}")


def make_surrogate(setting: PoisonSetting, options: AttackOptions, seed: int,
                   objective: Objective = softmax_loss) -> Surrogate:
    """The surrogate ``options.surrogate`` describes, over ``setting``, on ``options.device``, with the adversarial
    loss ``objective``."""
    return SURROGATES[type(options.surrogate)][1](setting, options.surrogate, seed, device=options.device,
                                                  objective=objective)


PRESETS: dict[str, AttackOptions] = {
    "paper": AttackOptions(),
    "lean": AttackOptions(WMFSettings(dim=64, epochs=40, unroll=3, warm_epochs=10)),
    "ci": AttackOptions(WMFSettings(dim=16, epochs=8, unroll=2, batch_rows=128, warm_epochs=4),
                        RevAdvSettings(iterations=6, cos_every=3)),
}
ALS_LOOP = RevAdvSettings(threshold=0.1, click_targets=True)  # RevAdv's attack_gen_args_wmf_als
ALS_PRESETS: dict[str, AttackOptions] = {
    "paper": AttackOptions(ALSSettings(), ALS_LOOP),
    "lean": AttackOptions(ALSSettings(dim=64), ALS_LOOP),
    "ci": AttackOptions(ALSSettings(dim=16, sweeps=4), RevAdvSettings(iterations=6, cos_every=3, threshold=0.1,
                                                                     click_targets=True)),
}
SURROGATE_PRESETS: dict[str, dict[str, AttackOptions]] = {"wmf": PRESETS, "wmf-als": ALS_PRESETS}

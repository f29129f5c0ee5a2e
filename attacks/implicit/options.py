"""Settings of the gradient attacks (surrogate, outer loop, SharpAP) and their named presets.

``paper``: the spec's hyper-parameters (RevAdv's WMF surrogate, d = 128, 50 epochs with the last 10 unrolled,
re-fitted from scratch every outer iteration: about 16 minutes of one core and 10 GiB for a RevAdv run on ML-1M);
``lean``: d = 64, a first fit of 40 epochs, then warm-started fits of 10 plain + 3 unrolled epochs (about 4 minutes
of one core and 3.7 GiB);
``ci``: a synthetic end-to-end check in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from attacks.implicit.revadv import RevAdvSettings
from attacks.implicit.sharpap import SharpSettings
from attacks.implicit.wmf_surrogate import WMFSettings


@dataclass(frozen=True)
class AttackOptions:
    """Settings of the gradient attacks (the heuristics need none)."""

    surrogate: WMFSettings = field(default_factory=WMFSettings)
    revadv: RevAdvSettings = field(default_factory=RevAdvSettings)
    sharp: SharpSettings = field(default_factory=SharpSettings)
    device: str = "cpu"  # where the surrogate trains and is differentiated (the outer loop's X stays on the CPU)


PRESETS: dict[str, AttackOptions] = {
    "paper": AttackOptions(),
    "lean": AttackOptions(WMFSettings(dim=64, epochs=40, unroll=3, warm_epochs=10)),
    "ci": AttackOptions(WMFSettings(dim=16, epochs=8, unroll=2, batch_rows=128, warm_epochs=4),
                        RevAdvSettings(iterations=6, cos_every=3)),
}

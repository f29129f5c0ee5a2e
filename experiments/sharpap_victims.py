"""How the SharpAP experiment trains its victims: each preset's training settings (``VICTIM_PRESETS``) and the
``--victim-set VICTIM.NAME=VALUE`` overrides of one victim's training or model hyper-parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.cli import UsageError, check_choices
from recsys.models.ranking import check_hyper_parameters, hyper_parameters

VICTIMS = ("wrmf", "bpr", "lightgcn", "sgl", "simgcl")  # the default: the SharpAP paper's five
VICTIM_CHOICES = (*VICTIMS, "wmf-adam")  # + RevAdv's WRMF victim: WMF trained by Adam, as its surrogate

@dataclass(frozen=True)
class VictimTraining:
    """How a preset trains a victim: epochs (ALS victims: sweeps), Adam's lr, the batch size,
    hyper-parameter overrides for ``make_model``, Adam's weight decay and a dimension other than the preset's."""

    epochs: int
    lr: float
    batch: int
    options: dict[str, Any] = field(default_factory=dict)
    weight_decay: float = 0.0
    dim: int | None = None


def _victims(**entries: tuple) -> dict[str, VictimTraining]:
    return {name: VictimTraining(*entry) for name, entry in entries.items()}


TRAINING_FIELDS = {"epochs": 1, "lr": 0, "batch": 1, "weight_decay": 0, "dim": 1}  # each one's least value (lr: >)


def _set_value(text: str) -> bool | float:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number, true or false")
    return value


def _training_value(name: str, value: bool | float) -> int | float:
    converted = float(value) if name in ("lr", "weight_decay") else int(value)
    least = TRAINING_FIELDS[name]
    if isinstance(value, bool) or converted != value or converted < least or (name == "lr" and converted == 0):
        relation = "> 0" if name == "lr" else f">= {least}"
        raise ValueError(f"{name} must be {'an integer ' if isinstance(converted, int) else ''}{relation}")
    return converted


def victim_overrides(entries: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--victim-set`` entries ``VICTIM.NAME=VALUE`` as {victim: {name: value}}: NAME one of ``TRAINING_FIELDS``
    or a hyper-parameter of the victim's model (``recsys.models.ranking.hyper_parameters``)."""
    chosen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        target, _, text = entry.partition("=")
        victim, _, name = target.partition(".")
        if not (victim and name and text):
            raise UsageError(f"--victim-set {entry}: expected VICTIM.NAME=VALUE, e.g. simgcl.ssl_weight=0")
        check_choices("--victim-set", [victim], VICTIM_CHOICES)
        if name not in TRAINING_FIELDS and name not in (known := hyper_parameters(victim)):
            raise UsageError(f"--victim-set {entry}: {victim} has no setting {name!r}; choose a training setting "
                             f"({', '.join(TRAINING_FIELDS)}) or a hyper-parameter ({', '.join(known) or 'none'})")
        try:
            value = _set_value(text)
            value = (_training_value(name, value) if name in TRAINING_FIELDS
                     else check_hyper_parameters(victim, {name: value})[name])
        except ValueError as error:
            raise UsageError(f"--victim-set {entry}: {error}") from None
        chosen.setdefault(victim, {})[name] = value
    return chosen


def overridden(training: VictimTraining, changes: dict[str, Any]) -> VictimTraining:
    """``training`` with ``changes`` (``victim_overrides``' entries of one victim) applied."""
    settings = {name: value for name, value in changes.items() if name in TRAINING_FIELDS}
    options = {name: value for name, value in changes.items() if name not in TRAINING_FIELDS}
    return replace(training, **settings, options={**training.options, **options})


REVADV_WMF = (50, 1e-2, 2048, {}, 1e-5, 128)  # RevAdv's own WRMF victim (WeightedMF-sgd), cheap: both presets
VICTIM_PRESETS: dict[str, dict[str, VictimTraining]] = {  # the attacks' settings: attacks.implicit.PRESETS
    "paper": _victims(wrmf=(15, 1e-3, 2048), bpr=(200, 1e-3, 2048), lightgcn=(200, 1e-3, 2048),
                      sgl=(100, 1e-3, 2048), simgcl=(100, 1e-3, 2048), **{"wmf-adam": REVADV_WMF}),
    "lean": _victims(wrmf=(10, 1e-3, 2048), bpr=(30, 5e-3, 8192), lightgcn=(20, 1e-3, 32768),  # one ML-1M condition
                     sgl=(10, 1e-3, 32768, {"include_ego": False}), simgcl=(10, 5e-3, 32768),  # in an hour on 2 cores
                     **{"wmf-adam": REVADV_WMF}),
    "ci": _victims(wrmf=(4, 1e-3, 2048), bpr=(10, 1e-2, 1024), lightgcn=(6, 1e-2, 1024),
                   sgl=(4, 1e-2, 1024), simgcl=(4, 1e-2, 1024), **{"wmf-adam": (10, 1e-2, 128, {}, 1e-5)}),
}
VICTIM_DIM = {"paper": 64, "lean": 64, "ci": 16}

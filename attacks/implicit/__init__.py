"""Implicit-feedback fake-profile attacks, by name; each returns ``FakeProfiles`` within the
setting's per-fake budget: ``random``, ``bandwagon`` (heuristics), ``revadv`` (hypergradient
through a WMF surrogate, ``options.surrogate`` names which) and ``revadv+sharpap`` (RevAdv with SharpAP's sharpness-aware cotangent).

A new attack is a function ``(setting, options, seed) -> (profiles, history)`` plus an entry in ``ATTACKS``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from attacks.implicit import heuristic, revadv
from attacks.implicit.options import PRESETS, SURROGATE_PRESETS, AttackOptions, make_surrogate
from attacks.implicit.profiles import FakeProfiles, PoisonSetting
from attacks.implicit.sharpap import SharpAP

History = list[dict[str, Any]]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{seed}/{name}".encode()))


def _heuristic(function: Callable[[PoisonSetting, np.random.Generator], FakeProfiles], name: str):
    def generate(setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
        return function(setting, _rng(seed, name)), []
    return generate


def gradient_attack(setting: PoisonSetting, options: AttackOptions, seed: int, sharp: bool,
                    on_iteration: Callable[[dict[str, Any], Any], None] | None = None) -> tuple[FakeProfiles, History]:
    """RevAdv (``sharp`` False) or RevAdv+SharpAP on the surrogate ``options.surrogate`` describes; both share X₀,
    the surrogate's seed and the targets. ``on_iteration(row, X_t)``: see ``revadv.run``."""
    surrogate = make_surrogate(setting, options, seed)
    rule = SharpAP(options.sharp) if sharp else revadv.plain_cotangent
    return revadv.run(surrogate, setting, options.revadv, _rng(seed, "revadv"), rule, on_iteration)


def _gradient(sharp: bool):
    def generate(setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
        return gradient_attack(setting, options, seed, sharp)
    return generate


ATTACKS: dict[str, Callable[[PoisonSetting, AttackOptions, int], tuple[FakeProfiles, History]]] = {
    "random": _heuristic(heuristic.random_attack, "random"),
    "bandwagon": _heuristic(heuristic.bandwagon_attack, "bandwagon"),
    "revadv": _gradient(sharp=False),
    "revadv+sharpap": _gradient(sharp=True),
}


def generate(name: str, setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
    """Fake profiles of attack ``name`` (one of ``ATTACKS``) and its per-iteration history."""
    if name not in ATTACKS:
        raise ValueError(f"unknown implicit attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name](setting, options, seed)


__all__ = ["ATTACKS", "PRESETS", "SURROGATE_PRESETS", "AttackOptions", "FakeProfiles", "PoisonSetting", "generate", "gradient_attack"]

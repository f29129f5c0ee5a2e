"""Implicit-feedback fake-profile attacks, by name; each returns ``FakeProfiles`` within the setting's per-fake budget:
``random``, ``bandwagon``, ``targets-only``, ``random-floor``, ``popular-floor`` (heuristics), the gradient attacks
``revadv`` (hypergradient through a WMF surrogate, ``options.surrogate`` names which; ``revadv-popular``: from rows
drawn by item popularity instead of real users' rows), ``rapu`` (RAPU-G: RevAdv's loop with RAPU's objective and
projection) and ``dada`` (approximate DADA: RevAdv's loop with a difficulty- and diversity-weighted objective), and
each of those with SharpAP's sharpness-aware cotangent (``revadv+sharpap``, ``rapu+sharpap``, ``dada+sharpap``).

A new attack is a function ``(setting, options, seed) -> (profiles, history)`` plus an entry in ``ATTACKS``;
a new gradient attack is an entry in ``GRADIENT_BASES`` (its objective, outer-loop settings and X₀).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from attacks.implicit import dada, heuristic, rapu, revadv
from attacks.implicit.options import PRESETS, SURROGATE_PRESETS, AttackOptions, make_surrogate
from attacks.implicit.profiles import FakeProfiles, PoisonSetting
from attacks.implicit.revadv import RevAdvSettings
from attacks.implicit.sharpap import SharpAP
from attacks.implicit.surrogate import Objective, softmax_loss

History = list[dict[str, Any]]
SHARP_SUFFIX = "+sharpap"
# gradient attack -> (its adversarial objective for a setting and seed, its outer-loop settings from the preset's,
# its X₀)
ObjectiveFactory = Callable[[PoisonSetting, int], Objective]
GRADIENT_BASES: dict[str, tuple[ObjectiveFactory, Callable[[RevAdvSettings], RevAdvSettings], revadv.InitialFake]] = {
    "revadv": (lambda setting, seed: softmax_loss, lambda settings: settings, revadv.initial_fake),
    "revadv-popular": (lambda setting, seed: softmax_loss, lambda settings: settings, revadv.popular_initial_fake),
    "rapu": (lambda setting, seed: rapu.wmw_loss, rapu.loop_settings, revadv.initial_fake),
    "dada": (dada.objective, lambda settings: settings, revadv.initial_fake),
}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{seed}/{name}".encode()))


def _heuristic(function: Callable[[PoisonSetting, np.random.Generator], FakeProfiles], name: str):
    def generate(setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
        return function(setting, _rng(seed, name)), []
    return generate


def gradient_attack(setting: PoisonSetting, options: AttackOptions, seed: int, sharp: bool,
                    on_iteration: Callable[[dict[str, Any], Any], None] | None = None,
                    base: str = "revadv") -> tuple[FakeProfiles, History]:
    """The gradient attack ``base`` (a name of ``GRADIENT_BASES``), with SharpAP's cotangent when ``sharp``, on the
    surrogate ``options.surrogate`` describes; all share X₀, the surrogate's seed and the targets.
    ``on_iteration(row, X_t)``: see ``revadv.run``."""
    objective, loop, initial = GRADIENT_BASES[base]
    surrogate = make_surrogate(setting, options, seed, objective(setting, seed))
    rule = SharpAP(options.sharp) if sharp else revadv.plain_cotangent
    return revadv.run(surrogate, setting, loop(options.revadv), _rng(seed, "revadv"), rule, on_iteration, initial)


def _gradient(base: str, sharp: bool):
    def generate(setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
        return gradient_attack(setting, options, seed, sharp, base=base)
    return generate


ATTACKS: dict[str, Callable[[PoisonSetting, AttackOptions, int], tuple[FakeProfiles, History]]] = {
    "random": _heuristic(heuristic.random_attack, "random"),
    "bandwagon": _heuristic(heuristic.bandwagon_attack, "bandwagon"),
    "targets-only": _heuristic(heuristic.targets_only_attack, "targets-only"),
    "random-floor": _heuristic(heuristic.random_floor_attack, "random-floor"),
    "popular-floor": _heuristic(heuristic.popular_floor_attack, "popular-floor"),
    **{f"{base}{suffix}": _gradient(base, sharp=bool(suffix))
       for base in GRADIENT_BASES for suffix in ("", SHARP_SUFFIX)},
}
GRADIENT_ATTACKS = tuple(name for name in ATTACKS if name.removesuffix(SHARP_SUFFIX) in GRADIENT_BASES)


def generate(name: str, setting: PoisonSetting, options: AttackOptions, seed: int) -> tuple[FakeProfiles, History]:
    """Fake profiles of attack ``name`` (one of ``ATTACKS``) and its per-iteration history."""
    if name not in ATTACKS:
        raise ValueError(f"unknown implicit attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name](setting, options, seed)


__all__ = ["ATTACKS", "GRADIENT_ATTACKS", "GRADIENT_BASES", "PRESETS", "SHARP_SUFFIX", "SURROGATE_PRESETS",
           "AttackOptions", "FakeProfiles", "PoisonSetting", "generate", "gradient_attack"]

"""Named building blocks and the one loader that resolves them.

A registry maps a short name to an import path (``module:Class``); the loader imports it when a run asks
for it. The registries live here, below the server and the clients that use them, and name the classes
of the layers above (attacks, defenses) by string only, so no module imports upwards. A user's own class
is given the same way: ``package.module:Class`` or ``path/to/file.py:Class``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

CLIENT_STRATEGIES: dict[str, str] = {
    "honest": "clients.strategy:HonestStrategy",
}
MALICIOUS_STRATEGIES: dict[str, str] = {
    "a-ra": "attacks.federated.a_ra:RandomApproximation",
    "a-hum": "attacks.federated.a_hum:HardUserMining",
    "eb": "attacks.federated.explicit_boosting:ExplicitBoosting",
    "eb-promote": "attacks.federated.promotion_boosting:PromotionBoosting",
    "ra": "attacks.federated.random_attack:RandomAttack",
    "profile:random": "attacks.federated.profile_clients:RandomProfiles",
    "profile:bandwagon": "attacks.federated.profile_clients:BandwagonProfiles",
    "profile:targets-only": "attacks.federated.profile_clients:TargetsOnlyProfiles",
    "profile:random-floor": "attacks.federated.profile_clients:RandomFloorProfiles",
    "profile:popular-floor": "attacks.federated.profile_clients:PopularFloorProfiles",
    "profile:revadv": "attacks.federated.profile_clients:RevAdvProfiles",
    "profile:revadv+sharpap": "attacks.federated.profile_clients:SharpAPProfiles",
    "profile:revadv-popular": "attacks.federated.profile_clients:RevAdvPopularProfiles",
    "profile:revadv-popular+sharpap": "attacks.federated.profile_clients:RevAdvPopularSharpAPProfiles",
    "profile:rapu": "attacks.federated.profile_clients:RAPUProfiles",
    "profile:rapu+sharpap": "attacks.federated.profile_clients:RAPUSharpAPProfiles",
    "profile:dada": "attacks.federated.profile_clients:DADAProfiles",
    "profile:dada+sharpap": "attacks.federated.profile_clients:DADASharpAPProfiles",
}
PROFILE_ATTACK_PRESETS: tuple[str, ...] = ("paper", "lean", "ci")  # the keys of attacks.implicit.PRESETS
AGGREGATION_RULES: dict[str, str] = {
    "sum": "defenses.federated.sum_rule:SumRule",
    "norm-bound": "defenses.federated.norm_bound:NormBound",
    "median": "defenses.federated.median:Median",
    "trimmed-mean": "defenses.federated.trimmed_mean:TrimmedMean",
    "krum": "defenses.federated.krum:Krum",
    "multi-krum": "defenses.federated.krum:MultiKrum",
    "bulyan": "defenses.federated.bulyan:Bulyan",
    "centered-clip": "defenses.federated.centered_clip:CenteredClip",
    "dp-clip": "defenses.federated.dp_clip:DPClip",
    "row-gate": "defenses.federated.row_gate:UploaderCountGate",
}


def strategy_registry() -> dict[str, str]:
    """Every built-in client strategy, honest and malicious."""
    return {**CLIENT_STRATEGIES, **MALICIOUS_STRATEGIES}


def is_spec(text: str) -> bool:
    """Whether ``text`` names a class by import path rather than by registry name (registered names such as
    ``profile:bandwagon`` may hold a colon too; they are looked up first)."""
    return ":" in text


def load_class(spec: str, registry: dict[str, str], kind: str, base: type | None = None) -> type:
    """Resolve a registry name, ``package.module:Class`` or ``path/to/file.py:Class`` to the class;
    ``ValueError`` says what was wrong (unknown name, missing file or module, missing class, wrong type)."""
    path = registry.get(spec, spec)
    if not is_spec(path):
        raise ValueError(f"unknown {kind} {spec!r}: use one of {', '.join(sorted(registry))}, "
                         "'package.module:Class' or 'path/to/file.py:Class'")
    module_name, _, class_name = path.rpartition(":")
    module = _load_file(module_name, kind) if module_name.endswith(".py") else _import(module_name, kind)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{kind} {spec!r}: {module_name} has no attribute {class_name!r}")
    if not isinstance(cls, type) or (base is not None and not issubclass(cls, base)):
        expected = f"{base.__module__}.{base.__qualname__}" if base is not None else "a class"
        raise ValueError(f"{kind} {spec!r}: {class_name} is not a subclass of {expected}")
    return cls


def _import(module_name: str, kind: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {kind} module {module_name!r}: {error}") from error


def _load_file(file_name: str, kind: str):
    path = Path(file_name).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{kind} file {path} does not exist")
    unique_name = f"fedrec_plugin_{abs(hash(str(path)))}"
    module = sys.modules.get(unique_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(unique_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[unique_name]
            raise ValueError(f"{kind} file {path} failed to import: {type(error).__name__}: {error}") from error
    return module

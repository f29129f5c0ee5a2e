"""Heuristic implicit attacks: every fake user clicks all targets plus budget − |T| fillers.

* Random (Lam & Riedl 2004): fillers uniformly among the non-target items.
* Bandwagon (Burke et al. 2005): a tenth of the fillers (at least one) from the 50 most popular
  items, the rest uniform (the shares of ``attacks.data_poisoning.bandwagon``).
* Targets only: no fillers, every fake user clicks exactly the targets (the shortest fake rows the budget allows;
  a control for how much a gradient attack's choice of fillers adds).
* Random at the floor: the targets plus uniform fillers up to the shortest real user's list, the shortest fake rows
  a filter on the number of interactions lets through without dropping a real user.
* Popular at the floor: the same length, the fillers drawn in proportion to the items' training counts, as a real
  user's items are.
"""

from __future__ import annotations

import numpy as np

from attacks.data_poisoning.bandwagon import POPULAR_POOL, SELECTED_SHARE
from attacks.data_poisoning.profiles import draw_fillers
from attacks.implicit.profiles import FakeProfiles, PoisonSetting


def _with_targets(setting: PoisonSetting, fillers: np.ndarray) -> FakeProfiles:
    targets = np.broadcast_to(setting.targets, (setting.num_fake, len(setting.targets)))
    return FakeProfiles.from_rows(np.concatenate((targets, fillers), axis=1), setting.budget)


def targets_only_attack(setting: PoisonSetting, rng: np.random.Generator) -> FakeProfiles:
    """Every fake user clicks exactly the targets (``rng`` unused: nothing is drawn)."""
    return _with_targets(setting, np.empty((setting.num_fake, 0), dtype=np.int64))


def _drawn_fillers(setting: PoisonSetting, rng: np.random.Generator, length: int,
                   weights: np.ndarray | None = None) -> FakeProfiles:
    fillers = draw_fillers(rng, setting.num_fake, setting.num_items, length - len(setting.targets), setting.targets,
                           weights=weights)
    return _with_targets(setting, fillers)


def _floor_length(setting: PoisonSetting) -> int:
    return min(setting.budget, max(len(setting.targets), setting.real_floor()))


def random_attack(setting: PoisonSetting, rng: np.random.Generator) -> FakeProfiles:
    return _drawn_fillers(setting, rng, setting.budget)


def random_floor_attack(setting: PoisonSetting, rng: np.random.Generator) -> FakeProfiles:
    """The targets plus uniform fillers, each fake user as long as the shortest real user (within the budget)."""
    return _drawn_fillers(setting, rng, _floor_length(setting))


def popular_floor_attack(setting: PoisonSetting, rng: np.random.Generator) -> FakeProfiles:
    """As ``random_floor_attack``, the fillers drawn in proportion to the items' training counts."""
    return _drawn_fillers(setting, rng, _floor_length(setting), weights=setting.item_counts().astype(np.float64))


def bandwagon_attack(setting: PoisonSetting, rng: np.random.Generator) -> FakeProfiles:
    count = setting.budget - len(setting.targets)
    selected_count = min(count, max(1, int(round(SELECTED_SHARE * count))))
    ranked = np.argsort(-setting.item_counts(), kind="stable")
    ranked = ranked[~np.isin(ranked, setting.targets)]
    popular = np.zeros(setting.num_items)
    popular[ranked[: max(POPULAR_POOL, selected_count)]] = 1.0
    selected = draw_fillers(rng, setting.num_fake, setting.num_items, selected_count, setting.targets, weights=popular)
    others = draw_fillers(rng, setting.num_fake, setting.num_items, count - selected_count, setting.targets,
                          taken=selected)
    return _with_targets(setting, np.concatenate((selected, others), axis=1))

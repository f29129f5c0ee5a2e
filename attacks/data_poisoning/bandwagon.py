"""Bandwagon attack (Burke et al. 2005): a tenth of the fillers (at least one) are drawn from the
most popular known items and rated at the maximum; the rest are random fillers rated from the
global N(μ, σ), as in the Random attack."""

from __future__ import annotations

import numpy as np

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble, draw_fillers

SELECTED_SHARE = 0.1  # share of the fillers that are popular "selected" items
POPULAR_POOL = 50  # the selected items come from this many most popular items


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    selected_count = max(1, int(round(SELECTED_SHARE * num_fillers)))
    popular = np.zeros(knowledge.num_items)
    ranked = np.argsort(-knowledge.item_counts(), kind="stable")
    ranked = ranked[~np.isin(ranked, targets)]
    popular[ranked[: max(POPULAR_POOL, selected_count)]] = 1.0
    selected = draw_fillers(rng, num_fake, knowledge.num_items, selected_count, targets, weights=popular)
    others = draw_fillers(rng, num_fake, knowledge.num_items, num_fillers - selected_count, targets, taken=selected)
    fillers = np.concatenate((selected, others), axis=1)
    ratings = rng.normal(knowledge.ratings.mean(), knowledge.ratings.std(), size=others.shape)
    ratings = np.concatenate((np.full(selected.shape, knowledge.grid.high), ratings), axis=1)
    return assemble(fillers, ratings, targets, knowledge.grid)

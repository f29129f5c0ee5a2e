"""AUSH (Lin et al. 2020): a GAN generates the fillers' ratings of fake profiles from real
templates; the targets get the maximum rating.

Each fake profile starts from a random known user (the template): its fillers are the template's
known items (padded with popularity-drawn items when it knows fewer than ``num_fillers``). The
generator G maps the template's rating vector (restricted to the fillers) to ratings of those
fillers; it is trained against a discriminator D (real known users vs. generated profiles with
the targets at the maximum) plus AUSH's reconstruction loss on the template's known ratings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from attacks.data_poisoning.knowledge import AttackerKnowledge
from attacks.data_poisoning.profiles import FakeProfiles, assemble, draw_fillers

HIDDEN = 128
STEPS = 200
BATCH = 64
LR = 1e-3


def _templates(known: np.ndarray, popularity: np.ndarray, count: int, num_fillers: int, targets: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random template users and their fillers: known items first, then popular ones."""
    users = rng.choice(np.flatnonzero(known.any(1)), size=count)
    weights = known[users] * 1e9 + popularity / popularity.sum()
    return users, draw_fillers(rng, count, known.shape[1], num_fillers, targets, weights=weights)


def _mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, outputs), nn.Sigmoid())


def generate(knowledge: AttackerKnowledge, targets: np.ndarray, num_fake: int, num_fillers: int,
             rng: np.random.Generator) -> FakeProfiles:
    torch.manual_seed(int(rng.integers(2**31)))  # network initialisation
    grid, items = knowledge.grid, knowledge.num_items
    real = torch.as_tensor(grid.normalise(knowledge.rating_matrix()))  # 0 = unknown
    known = (real > 0).numpy()
    popularity = knowledge.item_counts().astype(np.float64) + 1.0
    generator, discriminator = _mlp(items, items), _mlp(items, 1)
    g_opt = torch.optim.Adam(generator.parameters(), lr=LR)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=LR)
    bce = nn.BCELoss()
    target_index = torch.as_tensor(targets, dtype=torch.int64)

    def fake_batch(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users, fillers = _templates(known, popularity, count, num_fillers, targets, rng)
        mask = torch.zeros(count, items)
        mask.scatter_(1, torch.as_tensor(fillers), 1.0)
        template = real[torch.as_tensor(users)] * mask
        profile = generator(template) * mask
        profile = profile.index_fill(1, target_index, 1.0)
        return template, profile, torch.as_tensor(fillers)

    real_rows = np.flatnonzero(known.any(1))
    for _ in range(STEPS):
        batch = real[torch.as_tensor(rng.choice(real_rows, size=BATCH))]
        template, profile, _ = fake_batch(BATCH)
        d_loss = bce(discriminator(batch), torch.ones(BATCH, 1)) + bce(discriminator(profile.detach()),
                                                                     torch.zeros(BATCH, 1))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        observed = template > 0
        reconstruction = ((profile - template)[observed] ** 2).mean() if observed.any() else profile.sum() * 0
        g_loss = bce(discriminator(profile), torch.ones(BATCH, 1)) + reconstruction
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    with torch.no_grad():
        _, profile, fillers = fake_batch(num_fake)
        ratings = grid.denormalise(profile.gather(1, fillers)).numpy()
    return assemble(fillers.numpy(), ratings, targets, grid)

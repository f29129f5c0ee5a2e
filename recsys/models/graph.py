"""Graph pieces shared by LightGCN, SGL and SimGCL: the normalised bipartite adjacency, edge
dropout, layer propagation and the InfoNCE loss.

Â is stored as CSR and multiplied through ``SymmetricSpMM``: Â is symmetric, so the backward
pass of Â·E is Â·grad, one more CSR product, instead of autograd's transpose of a COO matrix
(on ML-1M, 0.8 M edges, d 64, L 3: 0.04 s instead of 0.29 s forward + backward, one thread)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from recsys.data.dataset import Interactions


def bipartite_edges(train: Interactions, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct (user, item) pairs of ``train`` as two aligned id tensors."""
    pairs = torch.unique(torch.from_numpy(train.row_ids()) * num_items + torch.from_numpy(train.items))
    return pairs // num_items, pairs % num_items


def normalised_adjacency(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Â = D^-1/2 A D^-1/2 of the bipartite graph A = [[0, R], [Rᵀ, 0]] (sparse CSR, N × N,
    N = users + items; users first). Isolated nodes get zero rows."""
    size = num_users + num_items
    rows = torch.cat((users, items + num_users))
    cols = torch.cat((items + num_users, users))
    degree = torch.bincount(rows, minlength=size).to(dtype)
    scale = degree.clamp(min=1).rsqrt()
    values = scale[rows] * scale[cols]
    coo = torch.sparse_coo_tensor(torch.stack((rows, cols)), values, (size, size), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": only the product below is used
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


class SymmetricSpMM(torch.autograd.Function):
    """Â·E for a symmetric sparse Â (no gradient w.r.t. Â): the backward pass is Â·grad."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


def drop_edges(users: torch.Tensor, items: torch.Tensor, ratio: float,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each (user, item) edge with probability 1 − ``ratio`` (SGL's edge dropout)."""
    keep = (torch.rand(len(users), generator=generator) >= ratio).to(users.device)  # drawn on the CPU
    return users[keep], items[keep]


def propagate(adjacency: torch.Tensor, ego: torch.Tensor, layers: int, include_ego: bool = True,
              noise: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean of E^(k), k = 0..L (or 1..L without the ego layer), E^(k+1) = Â E^(k).

    ``noise`` > 0 adds SimGCL's perturbation e ← e + ε·sign(e)⊙Δ/‖Δ‖, Δ ~ U(0, 1), after each layer."""
    layer, total = ego, ego if include_ego else torch.zeros_like(ego)
    for _ in range(layers):
        layer = SymmetricSpMM.apply(adjacency, layer)
        if noise > 0:
            delta = torch.rand(layer.shape, generator=generator, dtype=layer.dtype).to(layer.device)
            layer = layer + noise * torch.sign(layer) * F.normalize(delta, dim=-1)
        total = total + layer
    return total / (layers + 1 if include_ego else layers)


INFO_NCE_BLOCK = 2**26  # logits computed at once; above it, in chunks of rows
INFO_NCE_CHUNK = 2**22  # logits per chunk


class ChunkedInfoNCE(torch.autograd.Function):
    """mean_i [logsumexp_j(z1_i·z2_j/τ) − z1_i·z2_i/τ] without the n × n logits: the forward pass keeps
    each row's log-sum-exp, the backward pass recomputes one chunk of rows' softmax at a time
    (O(chunk · n) memory instead of several n × n buffers)."""

    @staticmethod
    def forward(ctx, z1: torch.Tensor, z2: torch.Tensor, temperature: float, chunk: int) -> torch.Tensor:
        lse = torch.cat([torch.logsumexp(z1[start:start + chunk] @ z2.T / temperature, dim=1)
                         for start in range(0, len(z1), chunk)])
        ctx.save_for_backward(z1, z2, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return (lse - (z1 * z2).sum(1) / temperature).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        z1, z2, lse = ctx.saved_tensors
        scale = grad / (len(z1) * ctx.temperature)
        grad_z1, grad_z2 = -scale * z2, -scale * z1
        for start in range(0, len(z1), ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            softmax = torch.exp(z1[rows] @ z2.T / ctx.temperature - lse[rows, None])
            grad_z1[rows] += scale * (softmax @ z2)
            grad_z2 += scale * (softmax.T @ z1[rows])
        return grad_z1, grad_z2, None, None


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of two views of the same rows: row i of ``view1`` against all rows of ``view2``
    (cosine similarity / τ), mean over rows. Up to ``INFO_NCE_BLOCK`` logits in one matrix; more (SGL
    and SimGCL on full Gowalla: ≈ 16,000 distinct users and 18,600 items per batch) in chunks of rows (``ChunkedInfoNCE``)."""
    z1, z2 = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    if len(z1) * len(z2) > INFO_NCE_BLOCK:
        return ChunkedInfoNCE.apply(z1, z2, temperature, max(1, INFO_NCE_CHUNK // len(z2)))
    logits = z1 @ z2.T / temperature
    return F.cross_entropy(logits, torch.arange(len(z1), device=z1.device))

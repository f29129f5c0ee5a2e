"""Neural Collaborative Filtering (He et al. 2017) as used by the federated poisoning paper.

Υ(p_u, q_i) = sigmoid(h^T Φ(p_u ⊕ q_i)) with Φ a ReLU MLP (eqs. 1–3). The server-side
parameters Θ = {Q, W_k, b_k, h} live in a flat ``Theta`` dict; user embeddings P are
never part of it (they stay on the clients).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from recsys import native

Theta = dict[str, torch.Tensor]

log = logging.getLogger("fedrec.recsys")

ITEM_EMBEDDING = "item_emb"


@dataclass(frozen=True)
class NCFSpec:
    """Shapes of an NCF model: embedding size ``dim`` and the MLP hidden ``layers``."""

    num_items: int
    dim: int = 8
    layers: tuple[int, ...] = (8, 8)

    def layer_sizes(self) -> list[int]:
        """Input and output width of every linear layer, the output layer (h) included."""
        return [2 * self.dim, *self.layers, 1]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every tensor in Θ, in a fixed order."""
        shapes: dict[str, tuple[int, ...]] = {ITEM_EMBEDDING: (self.num_items, self.dim)}
        sizes = self.layer_sizes()
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"mlp.{k}.weight"] = (fan_out, fan_in)
            shapes[f"mlp.{k}.bias"] = (fan_out,)
        return shapes

    @property
    def num_linear(self) -> int:
        return len(self.layers) + 1


def init_theta(spec: NCFSpec, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Theta:
    """Θ initialised as in the paper's code: Q ~ N(0, 0.01²), Kaiming-uniform (ReLU) weights, zero biases."""
    theta: Theta = {}
    for name, shape in spec.shapes().items():
        if name == ITEM_EMBEDDING:
            theta[name] = torch.randn(shape, generator=generator, dtype=dtype) * 0.01
        elif name.endswith(".weight"):
            bound = (6.0 / shape[1]) ** 0.5  # kaiming_uniform_, gain √2, fan_in
            theta[name] = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound
        else:
            theta[name] = torch.zeros(shape, dtype=dtype)
    return theta


def init_user_embeddings(count: int, dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """User embeddings p_u ~ N(0, 0.01²), as in the paper's code."""
    return torch.randn((count, dim), generator=generator, dtype=dtype) * 0.01


def _mlp_tail(x: torch.Tensor, theta: Theta, start: int, num_linear: int) -> torch.Tensor:
    """Apply linear layers ``start..num_linear-1`` (ReLU between, none after the last)."""
    for k in range(start, num_linear):
        x = torch.nn.functional.linear(x, theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"])
        if k < num_linear - 1:
            x = torch.relu(x)
    return x


def ncf_logits(user_emb: torch.Tensor, item_emb: torch.Tensor, theta: Theta, num_linear: int) -> torch.Tensor:
    """Pre-sigmoid scores for aligned rows of ``user_emb`` and ``item_emb`` (shape ``[B]``)."""
    x = torch.relu(torch.nn.functional.linear(torch.cat((user_emb, item_emb), dim=-1), theta["mlp.0.weight"], theta["mlp.0.bias"]))
    return _mlp_tail(x, theta, 1, num_linear).squeeze(-1)


class ScoreBuffers:
    """Reusable buffers for ``score_all_items``: fresh multi-MB tensors page-fault on every call, which
    costs ~20% of an evaluation on CPU."""

    def __init__(self) -> None:
        self._buffers: dict[int, torch.Tensor] = {}

    def get(self, layer: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        size = int(torch.Size(shape).numel())
        buffer = self._buffers.get(layer)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[layer] = torch.empty(size, dtype=like.dtype, device=like.device)
        return buffer[:size].view(shape)


SCORE_TILE_CELLS = 32_768  # (user, item) pairs per tile: a tile's activations stay in the L2 cache


def _unrolled_scores(user_part: torch.Tensor, item_part: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
    """Scores ``[U, M]`` from the first layer's parts (``[h, U, 1]`` with the bias, ``[h, 1, M]``) and the
    ``[W_k | b_k]`` of the other layers, written as element-wise arithmetic unrolled over the hidden units, so
    that ``torch.compile`` fuses the whole MLP into one vectorised loop over (user, item) pairs."""
    x = [torch.relu(user_part[c] + item_part[c]) for c in range(user_part.shape[0])]
    for k, layer in enumerate(layers):
        out = []
        for j in range(layer.shape[0]):
            y = layer[j, -1] + layer[j, 0] * x[0]
            for c in range(1, len(x)):
                y = y + layer[j, c] * x[c]
            out.append(y if k == len(layers) - 1 else torch.relu(y))
        x = out
    return x[0]


_compiled_scores = None  # ``_unrolled_scores`` compiled on first use; False where compiling failed


def _fused_scores(user_emb: torch.Tensor, theta: Theta, num_linear: int) -> torch.Tensor | None:
    """``score_all_items`` through the compiled ``_unrolled_scores``; None where no compiler is available."""
    global _compiled_scores
    if _compiled_scores is None:
        from torch._inductor import config as inductor_config

        inductor_config.compile_threads = 1  # no pool of compile worker processes
        inductor_config.cpp.enable_floating_point_contract_flag = "fast"  # a*b + c as one FMA: ~20% faster
        _compiled_scores = torch.compile(_unrolled_scores, dynamic=True)
    if _compiled_scores is False:
        return None
    weight, bias = theta["mlp.0.weight"], theta["mlp.0.bias"]
    dim = user_emb.shape[1]
    user_part = (weight[:, :dim] @ user_emb.T).add_(bias[:, None])[:, :, None]
    item_part = (weight[:, dim:] @ theta[ITEM_EMBEDDING].T)[:, None, :]
    layers = [torch.cat((theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"][:, None]), 1) for k in range(1, num_linear)]
    try:
        return _compiled_scores(user_part, item_part, layers)
    except Exception as error:  # noqa: BLE001 - e.g. no C++ compiler: the eager scorer gives the same scores
        log.warning("compiled scoring unavailable (%s: %s); scoring in eager torch", type(error).__name__, error)
        _compiled_scores = False
        return None


@torch.no_grad()
def score_all_items(user_emb: torch.Tensor, theta: Theta, num_linear: int, buffers: ScoreBuffers | None = None,
                    compiled: bool = False) -> torch.Tensor:
    """Pre-sigmoid scores of every item for every user in ``user_emb`` (shape ``[U, M]``).

    The first layer is split as W [p; q] = W_p p + W_q q, computed once per user and once per item, so it
    costs O((U + M)·d·h) instead of O(U·M·d·h). ``compiled``: the other layers as one loop fused by
    ``torch.compile`` (on CPU about 3x faster than the eager tiles; the first call in a process compiles,
    5–30 s), else in eager torch on cache-sized tiles. Both equal the untiled computation up to float rounding.
    With ``buffers`` (eager only) the result is a view into them, valid until the next call.
    """
    if num_linear < 2:
        raise ValueError(f"NCF needs at least one hidden layer, got {num_linear} linear layer(s)")
    fused = _fused_scores(user_emb, theta, num_linear) if compiled else None
    return fused if fused is not None else _tiled_scores(user_emb, theta, num_linear, buffers)


def _tiled_scores(user_emb: torch.Tensor, theta: Theta, num_linear: int,
                  buffers: ScoreBuffers | None = None) -> torch.Tensor:
    """``score_all_items`` in eager torch: the layers after the first run on tiles of about ``SCORE_TILE_CELLS``
    (user, item) pairs, channel-major (``[h + 1, pairs]``, the last row ones so that one matmul with
    ``[W_k | b_k]`` applies weight and bias): a tile's activations stay in cache. Scores equal the
    untiled computation up to float rounding (the matmul kernels' summation order).
    """
    buffers = buffers or ScoreBuffers()
    weight, bias = theta["mlp.0.weight"], theta["mlp.0.bias"]
    num_users, dim = user_emb.shape
    num_items = theta[ITEM_EMBEDDING].shape[0]
    user_part = (weight[:, :dim] @ user_emb.T).add_(bias[:, None])  # [h, U], contiguous (fast broadcasting)
    item_part = (weight[:, dim:] @ theta[ITEM_EMBEDDING].T)[:, None, :]  # [h, 1, M]
    affine = [torch.cat((theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"][:, None]), 1) for k in range(1, num_linear)]
    scores = buffers.get(-1, (num_users, num_items), user_emb)
    tile = max(1, SCORE_TILE_CELLS // max(1, num_items))
    for start in range(0, num_users, tile):
        users = min(tile, num_users - start)
        x = buffers.get(0, (weight.shape[0] + 1, users * num_items), user_emb)
        torch.add(user_part[:, start : start + users, None], item_part, out=x[:-1].view(-1, users, num_items)).relu_()
        x[-1] = 1
        for k, layer in enumerate(affine, 1):
            if k == num_linear - 1:
                torch.mm(layer, x, out=scores[start : start + users].view(1, -1))
            else:
                y = buffers.get(k, (layer.shape[0] + 1, x.shape[1]), user_emb)
                torch.mm(layer, x, out=y[:-1]).relu_()
                y[-1], x = 1, y
    return scores


def add_rows(out: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``out.index_add_(0, index, values)`` (rows added in index order, the same result): a sequential loop in the
    native kernel for float32 on the CPU (scatter_add_ sorts its index first), else a ``scatter_add_`` over a
    broadcast index (about twice as fast as ``index_add_`` on the CPU, which materialises that index)."""
    if len(index) and native.supports(out, values) and out.is_contiguous():
        return native.add_rows(out, index, values)
    return out.scatter_add_(0, index.view(-1, *[1] * (values.dim() - 1)).expand_as(values), values)


def _layer_inputs(theta: Theta, user_emb: torch.Tensor, owner: torch.Tensor, items: torch.Tensor,
                  num_linear: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The input of every linear layer (post-ReLU activations) for the (user row, item) samples, and the logits."""
    inputs = [torch.cat((user_emb[owner], theta[ITEM_EMBEDDING][items]), dim=1)]
    for k in range(num_linear):
        out = torch.nn.functional.linear(inputs[-1], theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"])
        inputs.append(out.relu_() if k < num_linear - 1 else out.squeeze(1))
    return inputs[:-1], inputs[-1]


def _backward(theta: Theta, inputs: list[torch.Tensor], upstream: torch.Tensor, num_linear: int,
              weight_grad, bias_grad) -> tuple[Theta, torch.Tensor]:
    """Walk the MLP backwards from ``upstream`` = ∂L/∂logit per sample; ``weight_grad(upstream, input)`` and
    ``bias_grad(upstream)`` reduce each layer's per-sample terms. Returns the MLP gradients and ∂L/∂(first layer's
    output); ∂L/∂[p; q] is that times ``mlp.0.weight``."""
    grads: Theta = {}
    for k in reversed(range(num_linear)):
        grads[f"mlp.{k}.weight"], grads[f"mlp.{k}.bias"] = weight_grad(upstream, inputs[k]), bias_grad(upstream)
        if k > 0:
            upstream = (upstream @ theta[f"mlp.{k}.weight"]).mul_(inputs[k] > 0)
    return grads, upstream


@torch.no_grad()
def weighted_bce_grads(
    theta: Theta,
    user_emb: torch.Tensor,
    owner: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_linear: int,
) -> tuple[torch.Tensor, Theta, torch.Tensor]:
    """L = Σ_s weights[s] · BCE(Υ(p_owner[s], q_items[s]), labels[s]) and its exact gradients.

    Returns (L, ∂L/∂Θ, ∂L/∂user_emb). A hand-written backward pass (repeated rows are
    accumulated in sample order, ``add_rows``): ~2x faster than autograd for this tiny MLP on CPU; the
    tests check it against autograd.
    """
    dim = user_emb.shape[1]
    loss, grads, input_grad = _input_grads(theta, user_emb, owner, items, labels, weights, num_linear)
    item_grad = add_rows(torch.zeros_like(theta[ITEM_EMBEDDING]), items, input_grad[:, dim:])
    user_grad = add_rows(torch.zeros_like(user_emb), owner, input_grad[:, :dim])
    return loss, {ITEM_EMBEDDING: item_grad, **{n: grads[n] for n in theta if n != ITEM_EMBEDDING}}, user_grad


@torch.no_grad()
def item_first_layer(theta: Theta, items: torch.Tensor) -> torch.Tensor:
    """W_q q_i + b0 for each of ``items``: the item half of the first layer, fixed while Θ is (``paired_row_grad``)."""
    dim = theta[ITEM_EMBEDDING].shape[1]
    return torch.addmm(theta["mlp.0.bias"], theta[ITEM_EMBEDDING][items], theta["mlp.0.weight"][:, dim:].T)


@torch.no_grad()
def paired_row_grad(theta: Theta, rows: torch.Tensor, item_part: torch.Tensor, labels: torch.Tensor,
                    num_linear: int) -> torch.Tensor:
    """∂/∂rows of Σ_r BCE(Υ(rows[r], q_{i_r}), labels[r]), row r paired with one item whose ``item_first_layer``
    is ``item_part[r]``: computed once by a caller that steps the rows many times under one Θ (A-hum's mining), so a
    step is a dozen small ops."""
    user_weight = theta["mlp.0.weight"][:, :rows.shape[1]]
    inputs = [torch.addmm(item_part, rows, user_weight.T).relu_()]  # the input of layer k is inputs[k - 1]
    for k in range(1, num_linear - 1):
        inputs.append(torch.addmm(theta[f"mlp.{k}.bias"], inputs[-1], theta[f"mlp.{k}.weight"].T).relu_())
    last = num_linear - 1
    upstream = torch.sigmoid(torch.addmm(theta[f"mlp.{last}.bias"], inputs[-1], theta[f"mlp.{last}.weight"].T))
    upstream.sub_(labels[:, None])  # ∂BCE/∂logit
    for k in reversed(range(1, num_linear)):
        upstream = (upstream @ theta[f"mlp.{k}.weight"]).mul_(inputs[k - 1] > 0)
    return upstream @ user_weight


def _input_grads(theta: Theta, user_emb: torch.Tensor, owner: torch.Tensor, items: torch.Tensor, labels: torch.Tensor,
                 weights: torch.Tensor, num_linear: int) -> tuple[torch.Tensor, Theta, torch.Tensor]:
    """L, ∂L/∂(MLP weights and biases) and ∂L/∂[p_owner; q_item] per sample."""
    inputs, logits = _layer_inputs(theta, user_emb, owner, items, num_linear)
    loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
    upstream = ((torch.sigmoid(logits) - labels) * weights)[:, None]
    grads, first = _backward(theta, inputs, upstream, num_linear, lambda up, x: up.T @ x, lambda up: up.sum(0))
    return loss, grads, first @ theta["mlp.0.weight"]


CHUNK = 64  # samples per block of the per-client reduction (each client's samples padded to a multiple)


@dataclass
class TouchedRows:
    """The distinct item rows each client's samples touch (CSR over clients, item ids ascending per client) and
    the row of every sample (``sample_row[s]`` indexes ``items``)."""

    indptr: torch.Tensor  # int64 [B + 1]
    items: torch.Tensor  # int64 [E]
    sample_row: torch.Tensor  # int64 [S]

    @classmethod
    def of_samples(cls, client: torch.Tensor, items: torch.Tensor, num_clients: int, num_items: int) -> TouchedRows:
        """From each sample's client and item (one sort; a shard precomputes this for its fixed samples)."""
        keys, sample_row = torch.unique(client * num_items + items, return_inverse=True)
        indptr = torch.zeros(num_clients + 1, dtype=torch.int64, device=items.device)
        torch.cumsum(torch.bincount(keys // num_items, minlength=num_clients), 0, out=indptr[1:])
        return cls(indptr, keys % num_items, sample_row)


@dataclass
class PerClientGrads:
    """Each client's own gradient ∂L_c/∂Θ: dense MLP tensors ``[B, *shape]`` and the item rows it touched
    (CSR over clients, item ids unique and ascending per client); plus each L_c and ∂L/∂rows."""

    losses: torch.Tensor  # [B]
    dense: Theta  # name -> [B, *shape], every Θ tensor but the item embeddings
    row_indptr: torch.Tensor  # int64 [B + 1]
    row_items: torch.Tensor  # int64 [E]
    row_values: torch.Tensor  # [E, d]
    row_grad: torch.Tensor  # ∂L/∂rows, [R, d]


@dataclass
class BlockedSamples:
    """Weighted BCE samples sorted by client, each client's run padded to a multiple of ``CHUNK`` with
    zero-weight samples (which contribute exact zeros), and the distinct item rows each client touches.

    Block ``b`` (samples ``b·CHUNK .. (b+1)·CHUNK − 1``) belongs to client ``block_client[b]``; ``valid`` marks the
    real samples. ``row_per_block``: every sample of a block has the same row (``owner``), as for clients with one
    row; then ``owner`` of block b is ``block_client[b]``.
    """

    owner: torch.Tensor  # int64 [T], row of each sample
    items: torch.Tensor  # int64 [T]
    labels: torch.Tensor  # [T]
    weights: torch.Tensor  # [T], 0 on padding
    valid: torch.Tensor  # bool [T]
    sample_row: torch.Tensor  # int64 [T], index into row_items
    block_client: torch.Tensor  # int64 [T // CHUNK], ascending
    row_indptr: torch.Tensor  # int64 [B + 1]
    row_items: torch.Tensor  # int64 [E], item ids ascending per client
    row_per_block: bool = False

    @classmethod
    def of_samples(cls, owner: torch.Tensor, items: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   client: torch.Tensor, num_clients: int, num_items: int) -> BlockedSamples:
        """From samples in any order (``client[s]``: the client of sample s); the sort is stable."""
        touched = TouchedRows.of_samples(client, items, num_clients, num_items)
        sample_row = touched.sample_row
        if len(client) > 1 and bool((client[1:] < client[:-1]).any()):
            order = torch.argsort(client, stable=True)
            owner, items, labels, weights, client = owner[order], items[order], labels[order], weights[order], client[order]
            sample_row = sample_row[order]
        counts = torch.bincount(client, minlength=num_clients)
        padded = (counts + CHUNK - 1) // CHUNK * CHUNK
        shift = torch.cumsum(padded - counts, 0) - (padded - counts)  # padding slots before each client's run
        position = torch.arange(len(client), device=client.device) + shift[client]
        total = int(padded.sum())

        def spread(values: torch.Tensor) -> torch.Tensor:
            out = values.new_zeros(total)
            out[position] = values
            return out

        block_client = torch.repeat_interleave(torch.arange(num_clients, device=client.device), padded // CHUNK)
        return cls(spread(owner), spread(items), spread(labels), spread(weights), spread(torch.ones_like(items, dtype=torch.bool)),
                   spread(sample_row), block_client, touched.indptr, touched.items)

    def blocks(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sample ``values`` ([T, ...]) viewed as ``[T // CHUNK, CHUNK, ...]``."""
        return values.view(-1, CHUNK, *values.shape[1:])

    def per_client(self, per_block: torch.Tensor, num_clients: int) -> torch.Tensor:
        """Sum of each client's blocks."""
        return add_rows(per_block.new_zeros((num_clients, *per_block.shape[1:])), self.block_client, per_block)


@torch.no_grad()
def per_client_bce_grads(
    theta: Theta,
    rows: torch.Tensor,
    owner: torch.Tensor,
    items: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    num_linear: int,
    client_of_row: torch.Tensor,
    num_clients: int,
) -> PerClientGrads:
    """``weighted_bce_grads`` split by client: L_c sums the samples whose row belongs to client c
    (``client_of_row[owner[s]] = c``), and every client gets its own ∂L_c/∂Θ, in one batched pass
    (``blocked_bce_grads`` on the samples laid out by ``BlockedSamples.of_samples``)."""
    samples = BlockedSamples.of_samples(owner, items, labels, weights, client_of_row[owner], num_clients,
                                        theta[ITEM_EMBEDDING].shape[0])
    return blocked_bce_grads(theta, rows, samples, num_linear, client_of_row, num_clients)


def _eager_block_pass(theta: Theta, item_part: torch.Tensor, row_part: torch.Tensor, samples: BlockedSamples,
                      num_linear: int, row_sums: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``native.block_grads`` in torch ops (any device and dtype): per block the loss and the gradients
    (``_gradient_columns``: every layer after the first, the first layer's bias and its item weight); with
    δ_s = ∂L/∂(first layer's output) of sample s, Σ δ_s per touched row and, if ``row_sums``, per row (repeated rows
    are added in sample order, ``add_rows``)."""
    items, labels, weights, blocks = samples.items, samples.labels, samples.weights, samples.blocks
    x = item_part.index_select(0, items)  # W_q q of every sample, [T, h]
    if samples.row_per_block:
        blocks(x).add_(row_part.index_select(0, samples.block_client)[:, None, :])
    else:
        x.add_(row_part.index_select(0, samples.owner))
    inputs = [x.relu_()]
    for k in range(1, num_linear):  # x Wᵀ + b as a matmul and an in-place add (``linear``'s addmm is slower, same result)
        out = (inputs[-1] @ theta[f"mlp.{k}.weight"].T).add_(theta[f"mlp.{k}.bias"])
        inputs.append(out.relu_() if k < num_linear - 1 else out.squeeze(1))
    logits = inputs.pop()
    losses = (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
              .mul_(weights).view(-1, CHUNK).sum(1))
    upstream = torch.sigmoid(logits).sub_(labels).mul_(weights)[:, None]
    per_block: Theta = {}
    for k in reversed(range(1, num_linear)):  # upstream: ∂L/∂(output of layer k), then of layer k - 1
        x = inputs[k - 1]
        per_block[f"mlp.{k}.weight"] = torch.bmm(blocks(upstream).transpose(1, 2), blocks(x))
        per_block[f"mlp.{k}.bias"] = blocks(upstream).sum(1)
        upstream = torch.ops.aten.threshold_backward(upstream @ theta[f"mlp.{k}.weight"], x, 0)
    per_block["mlp.0.bias"] = blocks(upstream).sum(1)
    per_block[ITEM_WEIGHT] = torch.bmm(blocks(upstream).transpose(1, 2), blocks(theta[ITEM_EMBEDDING].index_select(0, items)))
    columns = _gradient_columns(theta, num_linear)
    flat = torch.cat([per_block[name].reshape(len(losses), -1) for name, _ in columns], dim=1)
    per_touched = add_rows(upstream.new_zeros((len(samples.row_items), upstream.shape[1])), samples.sample_row, upstream)
    per_row = add_rows(upstream.new_zeros((len(row_part), upstream.shape[1])), samples.owner, upstream) if row_sums else None
    return losses, flat, per_touched, per_row


def _native_block_pass(theta: Theta, item_part: torch.Tensor, row_part: torch.Tensor, samples: BlockedSamples,
                       num_linear: int, row_sums: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``_eager_block_pass`` through the C kernel (``recsys.native.block_grads``)."""
    layers = [(theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"]) for k in range(1, num_linear)]
    return native.block_grads(samples.items, samples.owner, samples.labels, samples.weights, samples.sample_row,
                              len(samples.row_items), item_part, row_part, theta[ITEM_EMBEDDING], layers, row_sums,
                              samples.block_client)


def _gradient_columns(theta: Theta, num_linear: int) -> list[tuple[str, tuple[int, ...]]]:
    """The per-block gradients as columns of one matrix, in this order: W_k and b_k of every layer after the first,
    then the first layer's bias and item weight ``W_q`` (``ITEM_WEIGHT``, ``[h0, d]``)."""
    columns = [(f"mlp.{k}.{kind}", tuple(theta[f"mlp.{k}.{kind}"].shape)) for k in range(1, num_linear)
               for kind in ("weight", "bias")]
    hidden, dim = theta["mlp.0.bias"].shape[0], theta[ITEM_EMBEDDING].shape[1]
    return columns + [("mlp.0.bias", (hidden,)), (ITEM_WEIGHT, (hidden, dim))]


ITEM_WEIGHT = "item_weight"  # per-block key of the first layer's item half W_q


def _use_native(theta: Theta, rows: torch.Tensor) -> bool:
    return CHUNK == native.BLOCK and native.supports(rows, *theta.values())


@torch.no_grad()
def blocked_bce_grads(theta: Theta, rows: torch.Tensor, samples: BlockedSamples, num_linear: int,
                      client_of_row: torch.Tensor, num_clients: int, use_native: bool | None = None) -> PerClientGrads:
    """Every client's own loss and ∂L_c/∂Θ, and ∂L/∂rows, for samples laid out in per-client blocks.

    A per-client weight gradient Σ_s δ_s x_sᵀ is a sum over each block plus a sum of each client's blocks: no
    per-sample outer products, no Python loop. The first layer is split as W₀[p; q] = W_p p + W_q q: W_p p is
    computed once per row and W_q q once per item, and everything that is linear in the row's part is reduced per
    row before it is multiplied (Σ_s δ_s p_{owner s}ᵀ = Σ_r (Σ_{s: owner s = r} δ_s) p_rᵀ; ∂L/∂p_r =
    (Σ_{s: owner s = r} δ_s) W_p), which holds for clients with one row (honest) and with many (attackers'
    approximated rows) alike. The per-block pass runs in the C kernel of ``recsys.native`` for float32 on the CPU
    where it builds (``use_native=None``; ``True`` requires it, ``False`` uses torch ops), else in torch ops; both give
    the same gradients up to float rounding. Gathers use ``index_select`` (several times faster than indexing).
    """
    dim, item_emb, weight0 = rows.shape[1], theta[ITEM_EMBEDDING], theta["mlp.0.weight"]
    use_native = _use_native(theta, rows) if use_native is None else use_native
    item_part = item_emb @ weight0[:, dim:].T  # [M, h]: the same shape every round
    if use_native:  # each row's W p as its own sum: BLAS results can depend on the number of rows (the batch)
        row_part = (rows[:, None, :] * weight0[:, :dim]).sum(2).add_(theta["mlp.0.bias"])  # [R, h]
    else:
        row_part = torch.addmm(theta["mlp.0.bias"], rows, weight0[:, :dim].T)
    block_pass = _native_block_pass if use_native else _eager_block_pass
    one_row_per_client = len(rows) == num_clients and torch.equal(client_of_row, torch.arange(num_clients, device=rows.device))
    block_losses, per_block, per_touched, per_row = block_pass(theta, item_part, row_part, samples, num_linear,
                                                               not one_row_per_client)
    columns = _gradient_columns(theta, num_linear)
    sums = samples.per_client(torch.cat((block_losses[:, None], per_block), dim=1), num_clients)  # [B, 1 + P]
    parts = sums[:, 1:].split([torch.Size(shape).numel() for _, shape in columns], dim=1)
    dense = {name: part.view(num_clients, *shape) for (name, shape), part in zip(columns, parts)}
    if one_row_per_client:
        per_row = dense["mlp.0.bias"]  # honest clients: Σ δ per row is the bias gradient
    user_weight = per_row.new_zeros((num_clients, per_row.shape[1], dim)).index_add_(
        0, client_of_row, per_row[:, :, None] * rows[:, None, :])
    dense["mlp.0.weight"] = torch.cat((user_weight, dense.pop(ITEM_WEIGHT)), dim=2)
    dense = {name: dense[name].contiguous() for name in theta if name != ITEM_EMBEDDING}
    return PerClientGrads(sums[:, 0].contiguous(), dense, samples.row_indptr, samples.row_items,
                          per_touched @ weight0[:, dim:], per_row @ weight0[:, :dim])

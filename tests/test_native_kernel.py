"""The C kernels (``recsys/native``) give the torch ops' results: the per-block gradient pass, row sums, top rows."""

import numpy as np
import pytest
import torch

from recsys import native
from recsys.models.ncf import (BlockedSamples, NCFSpec, add_rows, blocked_bce_grads, init_theta, item_first_layer,
                               paired_row_grad)
from tests.helpers import random_samples, random_shard

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler to build the native kernel")


def float32_problem(layers: tuple[int, ...], dim: int, num_rows: int, count: int, seed: int):
    spec = NCFSpec(30, dim, layers)
    gen = torch.Generator().manual_seed(seed)
    theta = {name: value + 0.1 * torch.randn(value.shape, generator=gen)
             for name, value in init_theta(spec, gen).items()}  # non-zero biases, every ReLU branch taken
    rows = torch.randn((num_rows, dim), generator=gen) * 0.5
    owner, items, labels, weights = (t.float() if t.is_floating_point() else t for t in random_samples(count, num_rows, 30, seed))
    return spec, theta, rows, owner, items, labels, weights


@pytest.mark.parametrize("layers, dim", [((8, 8), 8), ((16,), 4), ((8, 4, 2), 6)])
@pytest.mark.parametrize("rows_per_client", [1, 3])
def test_native_pass_equals_torch_ops(layers, dim, rows_per_client):
    """Every client's loss and gradient, the item rows and ∂L/∂rows agree with the torch ops to float32 rounding,
    for one row per client (honest) and several (attackers), with clients spanning several blocks."""
    num_clients = 5
    spec, theta, rows, owner, items, labels, weights = float32_problem(layers, dim, num_clients * rows_per_client, 900, 1)
    client_of_row = torch.arange(num_clients).repeat_interleave(rows_per_client)
    samples = BlockedSamples.of_samples(owner, items, labels, weights, client_of_row[owner], num_clients, spec.num_items)
    kernel = blocked_bce_grads(theta, rows, samples, spec.num_linear, client_of_row, num_clients, use_native=True)
    eager = blocked_bce_grads(theta, rows, samples, spec.num_linear, client_of_row, num_clients, use_native=False)
    torch.testing.assert_close(kernel.losses, eager.losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kernel.row_values, eager.row_values, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(kernel.row_grad, eager.row_grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(kernel.row_items, eager.row_items) and torch.equal(kernel.row_indptr, eager.row_indptr)
    for name, value in eager.dense.items():
        torch.testing.assert_close(kernel.dense[name], value, rtol=1e-4, atol=1e-7, msg=name)
    assert float(eager.dense["mlp.1.weight"].abs().max()) > 1e-3  # the comparison is not between zeros


def test_a_clients_native_gradient_does_not_depend_on_the_batch():
    """A client's upload is bit-for-bit the same alone or among others (what makes sharding invisible)."""
    shard, theta = random_shard(num_users=12, dtype=torch.float32)
    theta = {name: value.float() for name, value in theta.items()}
    alone = shard.train_round(theta, np.array([5]), 0, torch.tensor([1]))
    shard_again, _ = random_shard(num_users=12, dtype=torch.float32)
    together = shard_again.train_round(theta, np.array([2, 5, 9]), 0, torch.tensor([1]))
    for name, value in alone.dense.items():
        assert torch.equal(value[0], together.dense[name][1]), name
    assert torch.equal(alone.row_values, together.row_values[together.row_indptr[1]:together.row_indptr[2]])


def test_native_pass_does_not_depend_on_the_thread_count(monkeypatch):
    """Blocks split into per-thread ranges at client boundaries give the one-thread sums to the bit."""
    spec, theta, rows, owner, items, labels, weights = float32_problem((8, 8), 8, 12, 3000, 5)
    client_of_row = torch.arange(6).repeat_interleave(2)  # several rows per client: the per-row sums are split too
    samples = BlockedSamples.of_samples(owner, items, labels, weights, client_of_row[owner], 6, spec.num_items)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = blocked_bce_grads(theta, rows, samples, spec.num_linear, client_of_row, 6, use_native=True)
        monkeypatch.setattr(native, "MIN_BLOCKS_PER_THREAD", 1)
        torch.set_num_threads(4)
        assert len(native._client_ranges(samples.block_client, 4)) == 5
        four = blocked_bce_grads(theta, rows, samples, spec.num_linear, client_of_row, 6, use_native=True)
    finally:
        torch.set_num_threads(threads)
    for name, value in one.dense.items():
        assert torch.equal(four.dense[name], value), name
    assert torch.equal(four.row_values, one.row_values) and torch.equal(four.row_grad, one.row_grad)
    assert torch.equal(four.losses, one.losses)


def test_out_of_range_rows_raise_instead_of_reading_past_the_tables():
    spec, theta, rows, owner, items, labels, weights = float32_problem((8, 8), 8, 4, 64, 2)
    client_of_row = torch.arange(4)
    samples = BlockedSamples.of_samples(owner, items, labels, weights, owner, 4, spec.num_items)
    samples.items[0] = spec.num_items  # one past the last item
    with pytest.raises(IndexError, match="out of range"):
        blocked_bce_grads(theta, rows, samples, spec.num_linear, client_of_row, 4, use_native=True)


def test_native_add_rows_equals_index_add_bit_for_bit_and_checks_its_index():
    gen = torch.Generator().manual_seed(4)
    values, index = torch.randn((5000, 3, 2), generator=gen), torch.randint(0, 40, (5000,), generator=gen)
    start = torch.randn((40, 3, 2), generator=gen)
    expected = start.clone().index_add_(0, index, values)
    assert torch.equal(native.add_rows(start.clone(), index, values), expected)
    assert torch.equal(add_rows(start.clone(), index, values), expected)
    index[-1] = 40
    out = start.clone()
    with pytest.raises(IndexError, match="out of range"):
        native.add_rows(out, index, values)
    assert torch.equal(out, start)


@pytest.mark.parametrize("layers, dim", [((8, 8), 8), ((16, 4), 6)])
def test_mined_rows_equal_the_torch_ops(layers, dim):
    """A-hum's mining in one C call: the rows of the torch-ops loop (``paired_row_grad`` steps)."""
    spec, theta, rows, *_ = float32_problem(layers, dim, 24, 64, 6)
    items = torch.randint(0, spec.num_items, (24,), generator=torch.Generator().manual_seed(7))
    item_part = item_first_layer(theta, items)
    expected, zeros = rows, torch.zeros(24)
    for _ in range(30):
        expected = expected - 0.05 * paired_row_grad(theta, expected, item_part, zeros, spec.num_linear)
    layer_pairs = [(theta[f"mlp.{k}.weight"], theta[f"mlp.{k}.bias"]) for k in range(1, spec.num_linear)]
    got = native.mine_rows(rows, item_part, theta["mlp.0.weight"][:, :dim], layer_pairs, 0.05, 30)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert float((got - rows).abs().max()) > 1e-3  # the rows moved


def test_segment_square_sums_equal_the_torch_ops():
    values = torch.randn((500, 8), generator=torch.Generator().manual_seed(3))
    indptr = torch.tensor([0, 0, 7, 250, 250, 500])  # empty segments too
    expected = torch.segment_reduce((values * values).sum(1), "sum", lengths=indptr.diff())
    torch.testing.assert_close(native.segment_square_sums(values, indptr), expected, rtol=1e-6, atol=0)
    assert native.segment_square_sums(values, indptr)[[0, 3]].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("depth", [1, 46, 300])
def test_top_rows_equals_topk(depth):
    """Distinct scores: the values and columns of ``torch.topk``, also for rows that are a view with a longer
    stride and rows holding -inf."""
    scores = torch.randn((50, 700), generator=torch.Generator().manual_seed(depth))[:, :300]
    scores[3, ::2] = -torch.inf
    expected = scores.topk(depth, dim=1)
    values, index = native.top_rows(scores, depth)
    assert torch.equal(values, expected.values)
    finite = expected.values.isfinite()
    assert torch.equal(index[finite], expected.indices[finite])  # -inf ties may be listed in any order


def test_top_rows_lists_equal_scores_in_column_order():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 1.0] * 20])
    values, index = native.top_rows(scores, 70)
    threes, twos = [c for c in range(120) if c % 6 in (1, 2, 4)], [c for c in range(120) if c % 6 == 3]
    assert index[0].tolist() == threes + twos[:10]
    assert values[0, :61].tolist() == [3.0] * 60 + [2.0]


def test_a_compiler_that_fails_leaves_the_torch_ops(monkeypatch, tmp_path, caplog):
    """No working C compiler: one warning, no kernels, and the gradients still come (from torch ops)."""
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setenv("FEDREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with caplog.at_level("WARNING", logger="fedrec.recsys"):
        assert native.library() is None
    assert "native kernels unavailable" in caplog.text and not list(tmp_path.iterdir())
    shard, theta = random_shard(num_users=4, dtype=torch.float32)
    uploads = shard.train_round({name: value.float() for name, value in theta.items()}, np.arange(4), 0,
                                torch.tensor([1]))
    assert uploads.num_clients == 4 and all(torch.isfinite(v).all() for v in uploads.dense.values())


def test_fedrec_native_0_turns_the_kernel_off(monkeypatch):
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setenv("FEDREC_NATIVE", "0")
    assert native.library() is None and not native.supports(torch.zeros(1))


def test_group_rows_builds_padded_groups_and_rejects_bad_layouts():
    """Entries take their row's slots in entry order: values, flags and columns (padding 0 / +inf); an item outside
    every group, more entries than slots, or groups that overrun the slots raise."""
    items = torch.tensor([4, 0, 4, 4, 0])
    first, size = torch.tensor([0, -1, -1, -1, 3]), torch.tensor([3, 0, 0, 0, 4])
    values = torch.arange(15, dtype=torch.float32).view(5, 3)
    flags = torch.tensor([True, False, False, True, False])
    out, out_flags, columns = native.group_rows(items, values, flags, first, size, 7, columns=True)
    slots = torch.tensor([1, 4, -1, 0, 2, 3, -1])  # row 0: entries 1, 4 in 3 slots; row 4: entries 0, 2, 3 in 4 slots
    held = slots >= 0
    expected = torch.zeros((7, 3)).masked_scatter_(held[:, None], values[slots[held]])
    assert torch.equal(out, expected) and torch.equal(out_flags, held & flags[slots.clamp(min=0)])
    padded = expected.masked_fill(~held[:, None], float("inf"))
    assert torch.equal(columns, torch.cat([padded[:3].T.flatten(), padded[3:].T.flatten()]))
    assert native.group_rows(items, values, None, first, size, 7, columns=False) == (None, None, None)
    assert torch.equal(native.group_rows(items, values, None, first, size, 7, columns=True)[2], columns)
    no_flags = torch.zeros(5, dtype=torch.bool)
    for bad_items in ([1, 0, 4, 4, 0], [0, 0, 0, 0, 4]):  # an item without a group; more entries than slots
        with pytest.raises(IndexError):
            native.group_rows(torch.tensor(bad_items), values, no_flags, first, size, 7, False)
    with pytest.raises(ValueError):  # groups that overrun the slots
        native.group_rows(items, values, no_flags, first, size + 1, 7, False)


def test_range_sums_add_each_rows_range_in_order():
    """``rows[g, c, low[g]:high[g]]`` summed left to right (the trimmed mean's kept ranks); bad ranges raise."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn((5, 3, 40), generator=gen)
    low, high = torch.tensor([0, 3, 5, 10, 0]), torch.tensor([40, 37, 5, 11, 1])
    out = native.range_sums(rows, low, high)
    for g in range(5):
        for c in range(3):
            total = torch.tensor(0.0)
            for k in range(int(low[g]), int(high[g])):
                total = rows[g, c, k] if k == low[g] else total + rows[g, c, k]
            assert torch.equal(out[g, c], total)
    with pytest.raises(IndexError):
        native.range_sums(rows, low, high + 1)

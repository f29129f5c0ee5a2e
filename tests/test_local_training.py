"""The batched local step equals a literal per-user loop, and the hand-written backward equals autograd."""

import numpy as np
import torch

from recsys.models.ncf import (ITEM_EMBEDDING, add_rows, item_first_layer, ncf_logits, paired_row_grad,
                               per_client_bce_grads, score_all_items, weighted_bce_grads)
from tests.helpers import client_gradient, random_samples, random_shard


def per_user_loop(shard, theta, users, lr):
    """The paper's client loop, one user at a time with autograd: mean BCE, p_u ← p_u − η∇p_u, each ∇Θ_u."""
    uploads, new_embeddings, losses = {}, {}, {}
    for u in users:
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        p = shard.embeddings[u].detach().clone().requires_grad_(True)
        pos, neg = shard.data.train.user(u), shard.data.negatives.user(u)
        items = torch.from_numpy(np.concatenate([pos, neg]))
        labels = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(p.dtype)
        logits = ncf_logits(p.expand(len(items), -1), leaves[ITEM_EMBEDDING][items], leaves, shard.spec.num_linear)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)  # mean over this user's samples
        loss.backward()
        uploads[u] = {k: leaves[k].grad for k in theta}
        new_embeddings[u] = (p - lr * p.grad).detach()
        losses[u] = float(loss.detach())
    return uploads, new_embeddings, losses


def test_batched_round_equals_per_user_loop():
    """Every client's own upload, loss and new p_u equal the per-user autograd loop's; uploads come back in
    client-id order whatever the order of the selection."""
    shard, theta = random_shard()
    users = np.array([7, 0, 3, 11, 4])
    expected_uploads, expected_p, expected_loss = per_user_loop(shard, theta, users, shard.lr)
    uploads = shard.train_round(theta, users, 0, torch.tensor([1]))
    assert uploads.client_ids.tolist() == sorted(users.tolist())
    for position, u in enumerate(sorted(users)):
        got = client_gradient(uploads, position, shard.spec.num_items)
        for name, grad in expected_uploads[u].items():
            torch.testing.assert_close(got[name], grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(shard.embeddings[u], expected_p[u], rtol=1e-10, atol=1e-12)
        assert abs(float(uploads.losses[position]) - expected_loss[u]) < 1e-9
        touched = np.union1d(shard.data.train.user(u), shard.data.negatives.user(u))
        assert uploads.row_items[uploads.row_indptr[position]:uploads.row_indptr[position + 1]].tolist() == touched.tolist()
    untouched = np.setdiff1d(np.arange(12), users)
    torch.testing.assert_close(shard.embeddings[untouched], random_shard()[0].embeddings[untouched])


def test_repeated_item_rows_are_accumulated_not_dropped():
    """Two samples of the same item in one user's data both contribute (the paper's x[idx] += g drops one)."""
    shard, theta = random_shard(num_users=1, num_items=12)
    owner = torch.zeros(3, dtype=torch.int64)
    items = torch.tensor([2, 2, 3])
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    weights = torch.full((3,), 1 / 3, dtype=torch.float64)
    _, grads, _ = weighted_bce_grads(theta, shard.embeddings, owner, items, labels, weights, 3)
    _, single_a, _ = weighted_bce_grads(theta, shard.embeddings, owner[:1], items[:1], labels[:1], weights[:1], 3)
    _, single_b, _ = weighted_bce_grads(theta, shard.embeddings, owner[1:2], items[1:2], labels[1:2], weights[1:2], 3)
    torch.testing.assert_close(grads[ITEM_EMBEDDING][2], single_a[ITEM_EMBEDDING][2] + single_b[ITEM_EMBEDDING][2])


def test_hand_written_backward_matches_autograd():
    shard, theta = random_shard(num_items=30)
    owner, items, labels, weights = random_samples(200, 12, 30, seed=1)
    loss, grads, user_grad = weighted_bce_grads(theta, shard.embeddings, owner, items, labels, weights, 3)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    users = shard.embeddings.clone().requires_grad_(True)
    logits = ncf_logits(users[owner], leaves[ITEM_EMBEDDING][items], leaves, 3)
    ref = (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(user_grad, users.grad)
    for name in theta:
        torch.testing.assert_close(grads[name], leaves[name].grad, msg=name)


def test_paired_row_gradient_matches_autograd():
    """A-hum's mining step: ∂/∂rows of Σ_r BCE(Υ(rows[r], q_{i_r}), y_r) with the item half computed once."""
    shard, theta = random_shard(num_items=30)
    gen = torch.Generator().manual_seed(2)
    items, labels = torch.randint(0, 30, (12,), generator=gen), torch.randint(0, 2, (12,), generator=gen).double()
    rows = (torch.randn((12, 8), generator=gen, dtype=torch.float64) * 0.3).requires_grad_(True)
    logits = ncf_logits(rows, theta[ITEM_EMBEDDING][items], theta, 3)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum").backward()
    got = paired_row_grad(theta, rows.detach(), item_first_layer(theta, items), labels, 3)
    torch.testing.assert_close(got, rows.grad)
    assert float(rows.grad.abs().max()) > 1e-4


def test_score_all_items_equals_pairwise_scores():
    shard, theta = random_shard(num_items=30)
    scores = score_all_items(shard.embeddings, theta, 3)
    users, items = torch.meshgrid(torch.arange(12), torch.arange(30), indexing="ij")
    pairwise = ncf_logits(shard.embeddings[users.reshape(-1)], theta[ITEM_EMBEDDING][items.reshape(-1)], theta, 3)
    torch.testing.assert_close(scores, pairwise.view(12, 30))


def test_per_client_gradients_equal_a_loop_over_clients_in_any_sample_order():
    """``per_client_bce_grads`` splits ``weighted_bce_grads`` by client exactly, whatever the sample order and
    with clients of many sizes (several blocks each) and clients without samples."""
    shard, theta = random_shard(num_items=30)
    owner, items, labels, weights = random_samples(700, 12, 30, seed=3)
    client_of_row = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 5, 1])  # client 6 has no sample
    grads = per_client_bce_grads(theta, shard.embeddings, owner, items, labels, weights, 3, client_of_row, 7)
    loss, summed, row_grad = weighted_bce_grads(theta, shard.embeddings, owner, items, labels, weights, 3)
    torch.testing.assert_close(grads.row_grad, row_grad)
    torch.testing.assert_close(grads.losses.sum(), loss)
    for c in range(7):
        mask = client_of_row[owner] == c
        expected_loss, expected, _ = weighted_bce_grads(theta, shard.embeddings, owner[mask], items[mask], labels[mask],
                                                        weights[mask], 3)
        torch.testing.assert_close(grads.losses[c], expected_loss)
        rows = slice(int(grads.row_indptr[c]), int(grads.row_indptr[c + 1]))
        assert grads.row_items[rows].tolist() == sorted(set(items[mask].tolist()))
        item = torch.zeros_like(expected[ITEM_EMBEDDING])
        item[grads.row_items[rows]] = grads.row_values[rows]
        torch.testing.assert_close(item, expected[ITEM_EMBEDDING])
        for name, value in grads.dense.items():
            torch.testing.assert_close(value[c], expected[name])


def test_add_rows_equals_index_add_bit_for_bit():
    """The scatter-based row sum adds repeated rows in index order, exactly as ``index_add_``."""
    gen = torch.Generator().manual_seed(4)
    index = torch.randint(0, 50, (3000,), generator=gen)
    values = torch.randn((3000, 8), generator=gen)
    expected = torch.zeros(60, 8).index_add_(0, index, values)
    assert torch.equal(add_rows(torch.zeros(60, 8), index, values), expected)

"""The implicit-feedback models on one interface: WRMF's ALS against its normal equations,
LightGCN's propagation against a dense reference, SGL/SimGCL views, batched metrics against
per-user loops, and native training through central mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from central.ranking_learner import TrainSettings, train_native
from recsys.data import make_synthetic
from recsys.data.dataset import Interactions
from recsys.models import graph
from recsys.models.graph import ChunkedInfoNCE, drop_edges, info_nce, normalised_adjacency, propagate
from recsys.models.ranking import MODELS, hyper_parameters, make_model
from recsys.promotion_metrics import PopularityScorer, popularity_bands, promotion, utility


def random_lists(num_users: int, num_items: int, seed: int, low: int = 2, high: int = 7) -> Interactions:
    rng = np.random.default_rng(seed)
    return Interactions.from_lists([rng.choice(num_items, rng.integers(low, high), replace=False)
                                    for _ in range(num_users)])


def test_wrmf_sweep_equals_the_per_user_and_per_item_normal_equations():
    train = random_lists(9, 11, 0)
    model = make_model("wrmf", 9, 11, 4, torch.Generator().manual_seed(0)).double()
    model.bind(train)
    y0 = model.item_emb.detach().clone()
    model.als_sweep()
    dense = torch.zeros(9, 11, dtype=torch.float64)
    dense[torch.from_numpy(train.row_ids()), torch.from_numpy(train.items)] = 1.0
    alpha, reg = model.alpha, model.reg

    def solve(rows: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:  # x = (FᵀC F + λI)⁻¹ Fᵀ C p, row by row
        out = []
        for p in rows:
            c = torch.diag(1.0 + alpha * p)
            out.append(torch.linalg.solve(fixed.T @ c @ fixed + reg * torch.eye(4, dtype=torch.float64),
                                          fixed.T @ c @ p))
        return torch.stack(out)

    x = solve(dense, y0)
    torch.testing.assert_close(model.user_emb.detach(), x)
    torch.testing.assert_close(model.item_emb.detach(), solve(dense.T, x))
    # the loss without the dense matrix equals the dense one, and ALS never raises it
    s = x @ model.item_emb.detach().T
    dense_loss = ((1 + alpha * dense) * (dense - s) ** 2).sum() + reg * (x.pow(2).sum() + model.item_emb.pow(2).sum())
    torch.testing.assert_close(model.objective(), dense_loss.detach())
    losses = [model.als_sweep()["train/loss"] for _ in range(4)]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def dense_rows(train: Interactions, num_items: int) -> torch.Tensor:
    dense = torch.zeros(train.num_users, num_items, dtype=torch.float64)
    dense[torch.from_numpy(train.row_ids()), torch.from_numpy(train.items)] = 1.0
    return dense


def revadv_row_loss(user_vecs: torch.Tensor, item_vecs: torch.Tensor, rows: torch.Tensor, alpha: float) -> torch.Tensor:
    """RevAdv's ``mse_loss(...).sum()`` on dense rows: weight α on a click, 1 elsewhere."""
    weights = torch.where(rows > 0, alpha, 1.0)
    return (weights * (rows - user_vecs @ item_vecs.T) ** 2).sum()


def test_adam_wmf_row_loss_and_gradient_equal_revadvs_dense_rows():
    lists = [[0, 3, 3, 5], [], [1], [2, 4, 6, 7, 8], [8, 0]]  # an empty row and a repeated click (counts once)
    train = Interactions.from_lists(lists)
    model = make_model("wmf-adam", 5, 9, 3, torch.Generator().manual_seed(0)).double()
    model.bind(train)
    users = torch.tensor([3, 0, 1, 4])
    loss = model.row_loss(users)
    grads = torch.autograd.grad(loss, [model.user_emb, model.item_emb])
    p, q = model.user_emb.detach().clone().requires_grad_(), model.item_emb.detach().clone().requires_grad_()
    reference = revadv_row_loss(p[users], q, dense_rows(train, 9)[users], model.alpha)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, torch.autograd.grad(reference, [p, q])):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert float(model.user_emb.detach().std()) == pytest.approx(0.1, rel=0.5)  # RevAdv's N(0, 0.1²) start


def test_adam_wmf_trains_as_revadv_trains_its_wmf():
    """Two epochs of ``train_native`` = Adam (L2 as weight decay) on the dense rows in the same shuffled user batches."""
    train = random_lists(13, 10, 4)
    settings = TrainSettings(2, lr=1e-2, batch_size=5, weight_decay=1e-3)
    model = make_model("wmf-adam", 13, 10, 4, torch.Generator().manual_seed(1)).double()
    p, q = model.user_emb.detach().clone().requires_grad_(), model.item_emb.detach().clone().requires_grad_()
    train_native(model, train, settings, seed=7)
    optimiser = torch.optim.Adam([p, q], lr=settings.lr, weight_decay=settings.weight_decay)
    rows, generator = dense_rows(train, 10), torch.Generator().manual_seed(7)
    for _ in range(settings.epochs):
        for users in torch.randperm(13, generator=generator).split(settings.batch_size):
            optimiser.zero_grad()
            revadv_row_loss(p[users], q, rows[users], model.alpha).backward()
            optimiser.step()
    torch.testing.assert_close(model.user_emb.detach(), p.detach())
    torch.testing.assert_close(model.item_emb.detach(), q.detach())


def test_lightgcn_propagation_equals_a_dense_reference():
    train = random_lists(6, 5, 1, high=5)
    model = make_model("lightgcn", 6, 5, 3, torch.Generator().manual_seed(1)).double()
    model.bind(train)
    a = torch.zeros(11, 11, dtype=torch.float64)
    a[torch.from_numpy(train.row_ids()), torch.from_numpy(train.items) + 6] = 1.0
    a = a + a.T
    d = a.sum(1).clamp(min=1).rsqrt()
    norm = d[:, None] * a * d[None, :]
    e = torch.cat((model.user_emb, model.item_emb)).detach()
    layers = [e]
    for _ in range(model.layers):
        layers.append(norm @ layers[-1])
    expected = torch.stack(layers).mean(0)
    users, items = model.representations()
    torch.testing.assert_close(torch.cat((users, items)).detach(), expected)
    torch.testing.assert_close(model.score_all(torch.arange(6)), expected[:6] @ expected[6:].T)
    # SimGCL's mean leaves out the ego layer
    without_ego = propagate(normalised_adjacency(*model.edges, 6, 5, torch.float64), e, 2, include_ego=False)
    torch.testing.assert_close(without_ego, (layers[1] + layers[2]) / 2)


def test_propagation_gradient_equals_autograd_through_the_dense_adjacency():
    users, items = torch.tensor([0, 0, 1, 2, 3, 3]), torch.tensor([0, 2, 1, 1, 0, 3])
    sparse = normalised_adjacency(users, items, 4, 4, torch.float64)
    ego = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weights = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad((propagate(sparse, ego, 3) * weights).sum(), ego)
    dense = sparse.to_dense()
    layers = [ego]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    (expected,) = torch.autograd.grad((torch.stack(layers).mean(0) * weights).sum(), ego)
    torch.testing.assert_close(grad, expected)


def test_simgcl_noise_has_norm_epsilon_and_the_sign_of_the_layer():
    adjacency = normalised_adjacency(torch.tensor([0, 1]), torch.tensor([1, 0]), 2, 2)
    ego = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    clean = propagate(adjacency, ego, 1, include_ego=False)
    noisy = propagate(adjacency, ego, 1, include_ego=False, noise=0.1, generator=torch.Generator().manual_seed(1))
    delta = noisy - clean
    torch.testing.assert_close(delta.norm(dim=1), torch.full((4,), 0.1))
    assert bool((torch.sign(delta) == torch.sign(clean))[clean != 0].all())


def test_edge_dropout_and_info_nce():
    users, items = torch.arange(10_000) % 50, torch.arange(10_000) % 70
    kept_users, _ = drop_edges(users, items, 0.1, torch.Generator().manual_seed(0))
    assert abs(len(kept_users) / 10_000 - 0.9) < 0.02
    z1, z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    expected = (-math.log(math.exp(1 / 0.2) / (math.exp(1 / 0.2) + math.exp(s / 0.2)))
                - math.log(math.exp(s / 0.2) / (math.exp(0.0) + math.exp(s / 0.2)))) / 2
    assert float(info_nce(z1, z2, 0.2)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64, 100])
def test_chunked_info_nce_equals_the_whole_logits_matrix(chunk):
    """The chunked InfoNCE (large batches) gives the loss and both gradients of the n × n computation."""
    generator = torch.Generator().manual_seed(0)
    view1, view2 = (torch.randn(64, 5, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    z1, z2 = F.normalize(view1, dim=-1), F.normalize(view2, dim=-1)
    whole = F.cross_entropy(z1 @ z2.T / 0.2, torch.arange(64))
    chunked = ChunkedInfoNCE.apply(z1, z2, 0.2, chunk)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)
    weight = torch.randn(64, 5, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad(whole * 3 + (z1 * weight).sum(), (view1, view2), retain_graph=True)
    actual = torch.autograd.grad(chunked * 3 + (z1 * weight).sum(), (view1, view2))
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_info_nce_switches_to_chunks_above_the_block(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    view1, view2 = torch.randn(40, 3, generator=generator), torch.randn(40, 3, generator=generator)
    whole = info_nce(view1, view2, 0.2)
    calls, chunked_apply = [], graph.ChunkedInfoNCE.apply
    monkeypatch.setattr(graph, "INFO_NCE_BLOCK", 40 * 40 - 1)
    monkeypatch.setattr(graph, "INFO_NCE_CHUNK", 7 * 40)
    monkeypatch.setattr(graph.ChunkedInfoNCE, "apply", lambda *args: calls.append(args[3]) or chunked_apply(*args))
    torch.testing.assert_close(info_nce(view1, view2, 0.2), whole, rtol=1e-6, atol=0)
    assert calls == [7]  # rows per chunk: INFO_NCE_CHUNK logits over 40 columns


@pytest.mark.parametrize("bound", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_score_all_matches_pairwise_scores(name, bound):
    model = make_model(name, 8, 9, 4, torch.Generator().manual_seed(2))
    if bound:  # graph models score over their training graph (an empty one before bind)
        model.bind(random_lists(8, 9, 2))
    users = torch.tensor([7, 0, 3])
    pairs = model.score(users[:, None].expand(-1, 9), torch.arange(9)[None, :].expand(3, -1))
    all_scores = model.score_all(users)
    if name == "lmf":  # score_all leaves out the user bias, which does not change a ranking
        all_scores = all_scores + model.user_bias[users, None]
    torch.testing.assert_close(all_scores, pairs.detach())


def test_make_model_rejects_unknown_hyper_parameters_and_values_their_type_cannot_hold():
    with pytest.raises(ValueError, match="no hyper-parameter 'dropout'; its hyper-parameters: include_ego, layers"):
        make_model("lightgcn", 2, 2, 2, torch.Generator(), dropout=0.5)
    with pytest.raises(ValueError, match="no hyper-parameter 'dump_patches'"):  # torch.nn.Module's, not the model's
        make_model("lightgcn", 2, 2, 2, torch.Generator(), dump_patches=True)
    with pytest.raises(ValueError, match="layers=2.5 does not fit its type int"):
        make_model("sgl", 2, 2, 2, torch.Generator(), layers=2.5)
    model = make_model("sgl", 2, 2, 2, torch.Generator(), layers=4.0, include_ego=0)
    assert (model.layers, model.include_ego) == (4, False) and type(model.layers) is int
    assert hyper_parameters("wrmf") == {"alpha": 20.0, "reg": 0.05}


def test_simgcl_without_its_contrastive_term_is_lightgcn_with_its_encoder(synthetic):
    """SimGCL with ssl_weight 0 trains as LightGCN with 2 layers and no ego layer: the same loss and gradient."""
    models = [make_model("simgcl", synthetic.num_users, synthetic.num_items, 8, torch.Generator().manual_seed(0),
                         ssl_weight=0),
              make_model("lightgcn", synthetic.num_users, synthetic.num_items, 8, torch.Generator().manual_seed(0),
                         layers=2, include_ego=False)]
    users, positives = synthetic.train.row_ids()[:64], synthetic.train.items[:64]
    negatives = torch.randint(synthetic.num_items, (64, 4), generator=torch.Generator().manual_seed(1))
    outputs = []
    for model in models:
        model.bind(synthetic.train)
        model.begin_epoch(torch.Generator().manual_seed(2))
        loss = model.training_loss(torch.as_tensor(users), torch.as_tensor(positives), negatives)
        outputs.append((loss, *torch.autograd.grad(loss, (model.user_emb, model.item_emb))))
    for simgcl, lightgcn in zip(*outputs):
        torch.testing.assert_close(simgcl, lightgcn, rtol=0, atol=0)


@pytest.fixture(scope="module")
def synthetic():
    # no popularity bias, strong affinities: a ranking must come from collaborative signal
    return make_synthetic(num_users=200, num_items=120, mean_items_per_user=15, seed=3, popularity_exponent=0.0,
                          temperature=0.3)


@pytest.mark.parametrize("name", ["wrmf", "bpr", "lightgcn", "sgl", "simgcl", "wmf-adam"])
def test_victims_train_natively_in_central_mode_and_beat_chance(synthetic, name):
    torch.set_num_threads(1)
    model = make_model(name, synthetic.num_users, synthetic.num_items, 16, torch.Generator().manual_seed(0))
    epochs = 4 if name == "wrmf" else 10
    history = train_native(model, synthetic.train, TrainSettings(epochs, lr=1e-2, batch_size=512), seed=0)
    losses = [row["train/loss"] for row in history if row["epoch"] > 0]
    assert losses[-1] < losses[0]
    recall = utility(model, synthetic.train, synthetic.test)["test/recall@20"]
    chance = 20 / synthetic.num_items  # SGL (with the ego layer, as SELFRec) is the weakest here: 0.23
    assert recall > 1.3 * chance


def test_promotion_and_utility_equal_per_user_loops(synthetic):
    model = make_model("bpr", synthetic.num_users, synthetic.num_items, 8, torch.Generator().manual_seed(5))
    targets = np.array([3, 50, 99])
    rows = synthetic.test.row_ids()
    kept = rows % 7 != 0  # every 7th user without a test list: not one of RevAdv's evaluated users
    test_lists = Interactions.from_pairs(rows[kept], synthetic.test.items[kept], synthetic.num_users)
    got = promotion(model, synthetic.train, targets, (10, 20), test=test_lists)
    scores = model.score_all(torch.arange(synthetic.num_users)).double()
    hits = {10: np.zeros(3), 20: np.zeros(3)}
    gains = {10: np.zeros(3), 20: np.zeros(3)}
    any_target = {10: [], 20: []}  # RevAdv: users with a test list, at least one target in the top K
    target_recall = {10: [], 20: []}  # GradientPassing: users with a target outside their training list
    eligible = np.zeros(3)
    recall = []
    for u in range(synthetic.num_users):
        row = scores[u].clone()
        seen = synthetic.train.user(u)
        row[torch.from_numpy(seen)] = -torch.inf
        order = torch.argsort(row, descending=True, stable=True).tolist()
        open_targets = [t for t in targets if t not in seen]
        test = set(test_lists.user(u).tolist())
        for k in (10, 20):
            ranked = [t for t in open_targets if 1 + int((row > row[t]).sum()) <= k]
            if test:
                any_target[k].append(len(ranked) > 0)
            if open_targets:
                target_recall[k].append(len(ranked) / len(open_targets))
        for j, t in enumerate(targets):
            if t in seen:
                continue
            eligible[j] += 1
            rank = 1 + int((row > row[t]).sum())
            for k in (10, 20):
                if rank <= k:
                    hits[k][j] += 1
                    gains[k][j] += 1 / math.log2(1 + rank)
        if test:
            recall.append(len(test & set(order[:20])) / len(test))
    for k in (10, 20):
        assert got[f"hr@{k}"] == pytest.approx(float(np.mean(hits[k] / eligible)))
        assert got[f"ndcg@{k}"] == pytest.approx(float(np.mean(gains[k] / eligible)))
        assert got[f"any_target_hr@{k}"] == pytest.approx(float(np.mean(any_target[k])))
        assert got[f"target_recall@{k}"] == pytest.approx(float(np.mean(target_recall[k])))
    assert got["any_target_hr@20"] > got["hr@20"] > 0  # one target in the top 20 is enough for a user
    assert utility(model, synthetic.train, test_lists)["test/recall@20"] == pytest.approx(np.mean(recall))
    popular = utility(PopularityScorer(synthetic.train, synthetic.num_items), synthetic.train, synthetic.test)
    assert popular["test/recall@20"] > 0.1


class _CoarseScorer:
    """A model's scores rounded to three values: most items tie with most targets."""

    def __init__(self, model, num_users: int) -> None:
        self.model, self.scale = model, model.score_all(torch.arange(num_users)).detach().std()

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.round(self.model.score_all(users).detach() / self.scale).clamp(-1, 1)


def test_promotion_ranks_ties_as_a_count_over_all_items(synthetic):
    model = make_model("bpr", synthetic.num_users, synthetic.num_items, 8, torch.Generator().manual_seed(5))
    scorer, targets = _CoarseScorer(model, synthetic.num_users), np.array([3, 50, 99, 7])
    scores = scorer.score_all(torch.arange(synthetic.num_users)).double()
    scores[torch.from_numpy(synthetic.train.row_ids()), torch.from_numpy(synthetic.train.items)] = -torch.inf
    target_scores = scores[:, targets]
    rank = 1 + (scores[:, None, :] > target_scores[:, :, None]).sum(-1)  # every item compared
    open_pairs = torch.isfinite(target_scores)
    got = promotion(scorer, synthetic.train, targets, (1, 10, 50))
    for k in (1, 10, 50):
        within = (rank <= k) & open_pairs
        assert got[f"per_target/hr@{k}"] == pytest.approx((within.sum(0) / open_pairs.sum(0)).tolist())
        gains = torch.where(within, 1 / torch.log2(1.0 + rank), 0.0).sum(0) / open_pairs.sum(0)
        assert got[f"per_target/ndcg@{k}"] == pytest.approx(gains.tolist())
    assert 0 < got["hr@10"] < got["hr@50"] < 1  # ties put targets on both sides of the cut


@pytest.mark.parametrize("item, band", [(20, "head"), (19, "upper torso"), (16, "upper torso"),
                                        (15, "lower torso"), (11, "lower torso"), (10, "tail"), (1, "tail"),
                                        (0, "tail")])
def test_popularity_band_is_the_count_percentile_among_items_with_an_interaction(item, band):
    """Item i (1..20) has i training interactions, item 0 none: i's percentile is (i - 1) / 20 (the share of
    the 20 items with an interaction whose count is smaller), so 20 is head (95), 16 upper torso (75), 11
    lower torso (50), 10 tail (45)."""
    train = Interactions.from_lists([[i for i in range(1, 21) if i > u] for u in range(20)])
    assert popularity_bands(train, 21, np.array([item])) == [band]


def test_wrmf_sweeps_equal_implicit_als():
    implicit_als = pytest.importorskip("implicit.cpu.als")
    from scipy.sparse import csr_matrix

    train = random_lists(30, 25, 4, high=9)
    model = make_model("wrmf", 30, 25, 6, torch.Generator().manual_seed(4)).double()
    model.bind(train)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit warns against a threaded BLAS
        reference = implicit_als.AlternatingLeastSquares(factors=6, regularization=model.reg, alpha=1.0,
                                                         dtype=np.float64, use_cg=False, iterations=3)
    reference.user_factors = model.user_emb.detach().numpy().copy()
    reference.item_factors = model.item_emb.detach().numpy().copy()
    confidence = csr_matrix((np.full(train.nnz, 1.0 + model.alpha), train.items, train.indptr), shape=(30, 25))
    with threadpool_limits(1, "blas"):
        reference.fit(confidence, show_progress=False)  # c_ui = 1 + α on observed pairs, 1 elsewhere
    for _ in range(3):
        model.als_sweep()
    np.testing.assert_allclose(model.user_emb.detach().numpy(), reference.user_factors, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.item_emb.detach().numpy(), reference.item_factors, rtol=1e-6, atol=1e-8)

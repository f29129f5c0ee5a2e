"""Implicit poisoning: fake-profile budgets, RevAdv's hypergradient against finite differences,
RAPU's objective against its sum written out, SharpAP's perturbations (ρ = 0 is the wrapped attack bit for
bit), and the experiment command end to end."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from attacks.implicit import (ATTACKS, GRADIENT_BASES, PRESETS, AttackOptions, FakeProfiles, PoisonSetting, generate,
                              gradient_attack)
from attacks.implicit import surrogate as surrogate_module
from attacks.implicit.rapu import wmw_loss
from attacks.implicit.revadv import RevAdvSettings, plain_cotangent, project
from attacks.implicit.rows import ClickRows, Clicks, DenseRows
from attacks.implicit.sharpap import SharpAP, SharpSettings, perturbation
from attacks.implicit.wmf_surrogate import WMFSettings, WMFSurrogate
from central.ranking_learner import TrainSettings, train_native
from experiments import sharpap_cell
from harness.sweep import run_sweep
from recsys.data import make_synthetic
from recsys.data.dataset import Interactions
from recsys.models.ranking import make_model

TINY_WMF = WMFSettings(dim=8, epochs=6, unroll=2, batch_rows=64, warm_epochs=2)


@pytest.fixture(scope="module")
def setting() -> PoisonSetting:
    torch.set_num_threads(1)
    data = make_synthetic(num_users=150, num_items=80, mean_items_per_user=12, seed=1)
    return PoisonSetting(data.train, data.num_items, np.array([4, 33, 70]), 6, 10)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_keeps_the_budget(setting, name):
    options = AttackOptions(TINY_WMF, RevAdvSettings(iterations=3))
    profiles, _ = generate(name, setting, options, seed=0)
    lengths = profiles.lists.lengths()
    assert profiles.lists.num_users == setting.num_fake and lengths.max() <= setting.budget
    heuristic_lengths = {"random": setting.budget, "bandwagon": setting.budget, "targets-only": len(setting.targets),
                         "random-floor": setting.real_floor(), "popular-floor": setting.real_floor()}  # 10, 10, 3, 5, 5
    if name in heuristic_lengths:
        assert (lengths == heuristic_lengths[name]).all()
        assert all(set(setting.targets) <= set(profiles.lists.user(f).tolist()) for f in range(setting.num_fake))
        assert profiles.share_below(setting.real_floor()) == (1.0 if name == "targets-only" else 0.0)


def test_bandwagon_takes_a_tenth_from_the_popular_items(setting):
    profiles, _ = generate("bandwagon", setting, AttackOptions(), seed=0)
    popular = set(np.argsort(-setting.item_counts(), kind="stable")[:53].tolist())
    fillers = [set(profiles.lists.user(f).tolist()) - set(setting.targets.tolist()) for f in range(setting.num_fake)]
    assert all(len(f & popular) >= 1 for f in fillers)


def test_popular_floor_draws_its_fillers_by_popularity(setting):
    counts = setting.item_counts()

    def filler_counts(name: str) -> float:
        items = generate(name, setting, AttackOptions(), seed=0)[0].lists.items
        return counts[items[~np.isin(items, setting.targets)]].mean()

    assert filler_counts("popular-floor") > 1.5 * filler_counts("random-floor")


def test_popular_x0_draws_rows_of_real_lengths_by_popularity_and_copies_no_one(setting):
    from attacks.implicit.revadv import initial_fake, popular_initial_fake

    counts, lengths = setting.item_counts(), setting.train.lengths()
    copied = initial_fake(setting, np.random.default_rng(0))
    drawn = popular_initial_fake(setting, np.random.default_rng(0))
    assert torch.equal(drawn.sum(1), copied.sum(1))  # the same users' lengths (the same draw of them)
    assert set(drawn.sum(1).long().tolist()) <= set(lengths[lengths <= setting.budget].tolist())
    rows = [set(torch.nonzero(row).flatten().tolist()) for row in drawn]
    real = [set(setting.train.user(u).tolist()) for u in range(setting.train.num_users)]
    assert all(row not in real for row in rows)
    mean_count = float((drawn * torch.from_numpy(counts).float()).sum() / drawn.sum())
    assert mean_count > 1.5 * counts.mean()  # uniform items would average counts.mean()


def test_projection_keeps_entries_above_the_threshold_within_the_budget():
    x = torch.tensor([[0.9, 0.04, 0.3, 0.06, -1.0], [0.01, 0.02, 0.03, 0.04, 0.05]])
    expected = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(project(x, 3, 0.05), expected)
    assert torch.equal(project(x, 2, 0.05), torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5]))
    assert torch.equal(project(x, 2, None).sum(1), torch.tensor([2.0, 2.0]))


def test_profiles_inject_save_and_load(tmp_path, setting):
    profiles = FakeProfiles.from_matrix(project(torch.rand(3, 80, generator=torch.Generator().manual_seed(0)), 5, None), 5)
    assert (profiles.lists.lengths() == 5).all()
    path = tmp_path / "p.npz"
    profiles.save(path)
    loaded = FakeProfiles.load(path)
    assert np.array_equal(loaded.lists.items, profiles.lists.items) and loaded.budget == 5
    poisoned = loaded.inject(setting.train)
    assert poisoned.num_users == setting.train.num_users + 3
    assert np.array_equal(poisoned.user(setting.train.num_users + 1), profiles.lists.user(1))
    with pytest.raises(ValueError, match="over the budget"):
        FakeProfiles(Interactions.from_lists([[1, 2, 3]]), 2)
    with pytest.raises(ValueError, match="distinct item ids"):
        PoisonSetting(setting.train, 80, np.array([1, 1]), 2, 5)


def test_revadvs_wrmf_victim_is_its_surrogate_with_another_draw(setting):
    """`wmf-adam`, trained in central mode on R + X from the surrogate's θ₀ with the surrogate's shuffles, ends
    at the surrogate's θ_E: the victim and the attack's model differ only by their random draw."""
    import zlib

    from central.ranking_learner import TrainSettings, train_native
    from recsys.models.ranking import make_model

    wmf = WMFSettings(dim=4, epochs=3, unroll=0, batch_rows=64, weight_decay=1e-3)
    surrogate = WMFSurrogate(setting, wmf, seed=5, dtype=torch.float64)
    rng = np.random.default_rng(0)
    fake = torch.from_numpy((rng.random((setting.num_fake, setting.num_items)) < 0.1).astype(np.float64))
    theta = surrogate.fit(fake, differentiable=False).theta
    poisoned = FakeProfiles.from_matrix(fake, setting.num_items).inject(setting.train)
    victim = make_model("wmf-adam", poisoned.num_users, setting.num_items, 4, torch.Generator()).double()
    start = surrogate.initial_theta()
    with torch.no_grad():
        victim.user_emb.copy_(torch.cat((start["user_real"], start["user_fake"])))
        victim.item_emb.copy_(start["item"])
    shuffles = zlib.crc32(b"5/wmf-shuffle")  # the surrogate's stream of row orders, one per epoch
    train_native(victim, poisoned, TrainSettings(wmf.epochs, wmf.lr, wmf.batch_rows, weight_decay=wmf.weight_decay),
                 seed=shuffles)
    torch.testing.assert_close(victim.item_emb.detach(), theta["item"], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(victim.user_emb.detach(), torch.cat((theta["user_real"], theta["user_fake"])),
                               rtol=1e-9, atol=1e-11)


def test_hypergradient_equals_finite_differences_on_a_tiny_problem():
    train = Interactions.from_lists([[0, 1], [1, 2, 3], [4, 5], [0, 5, 6], [2, 6]])
    small = PoisonSetting(train, 7, np.array([3]), 2, 4)
    settings = WMFSettings(dim=3, epochs=4, unroll=4, lr=0.05, batch_rows=3)  # every epoch unrolled
    surrogate = WMFSurrogate(small, settings, seed=0, dtype=torch.float64)
    fake = 0.2 + 0.6 * torch.rand(2, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def attack_loss(x: torch.Tensor) -> float:
        return float(surrogate.adversarial_loss(surrogate.fit(x, differentiable=False).theta))

    fit = surrogate.fit(fake)
    grad = fit.vjp(surrogate.adversarial_gradient(fit.theta))
    eps = 1e-6
    for row, col in [(0, 3), (1, 0), (1, 6), (0, 2)]:
        step = torch.zeros_like(fake)
        step[row, col] = eps
        numeric = (attack_loss(fake + step) - attack_loss(fake - step)) / (2 * eps)
        assert float(grad[row, col]) == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_stepwise_vjp_equals_one_vjp_through_the_whole_unrolled_training(setting):
    surrogate = WMFSurrogate(setting, TINY_WMF, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    fake = torch.rand(setting.num_fake, setting.num_items, generator=g, dtype=torch.float64)
    orders = [torch.randperm(setting.train.num_users + setting.num_fake, generator=g) for _ in range(4)]
    theta = surrogate.initial_theta()
    zeros = ({k: torch.zeros_like(v) for k, v in theta.items()}, {k: torch.zeros_like(v) for k, v in theta.items()})
    theta, state, step = surrogate._epochs(theta, zeros, 0, fake, orders[:2])  # Adam's moments are not zero

    theta_e, stepwise = surrogate._unrolled(theta, state, step, fake, orders[2:])  # 2 epochs of 3 batches
    whole, vjp = torch.func.vjp(lambda x: surrogate._epochs(theta, state, step, x, orders[2:])[0], fake)
    torch.testing.assert_close(theta_e, whole, rtol=0, atol=0)
    cotangent = surrogate.adversarial_gradient(theta_e)
    reference = vjp(cotangent)[0]
    torch.testing.assert_close(stepwise(cotangent), reference, rtol=1e-12, atol=1e-15)
    assert torch.equal(stepwise(cotangent), stepwise(cotangent))  # the saved inputs are not consumed
    assert float(reference.abs().max()) > 1e-4


def test_inner_loss_from_the_clicks_equals_revadvs_dense_rows():
    train = Interactions.from_lists([[0, 1, 1], [1, 2, 3], [4, 5], [0, 5, 6], [2, 6]])  # user 0 clicks item 1 twice
    surrogate = WMFSurrogate(PoisonSetting(train, 7, np.array([3]), 2, 4), WMFSettings(dim=3), seed=0,
                             dtype=torch.float64)
    theta = surrogate.initial_theta()
    fake = torch.tensor([[1.0, 0, 0.7, 1, 0, 0, -0.2], [0, 1, 0, 0, 0.4, 0, 1]], dtype=torch.float64)
    clicks = Clicks(torch.tensor([0, 2, 5, 7, 10, 12]), torch.tensor([0, 1, 1, 2, 3, 4, 5, 0, 5, 6, 2, 6]))
    y = torch.zeros(7, 7, dtype=torch.float64)
    y[torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]), clicks.items] = 1.0

    def written_out(theta, fake, batch):  # RevAdv's loss on dense rows of Y = [R; X]
        rows = torch.cat((y[:5], fake))[batch]
        users = torch.cat((theta["user_real"], theta["user_fake"]))[batch]
        return (torch.where(rows > 0, 20.0, 1.0) * (rows - users @ theta["item"].T) ** 2).sum()

    assert torch.equal(surrogate.real, y[:5])  # ML-1M-like density: dense rows, RevAdv's own computation
    for form in (lambda x: DenseRows(y[:5], x, 20.0), lambda x: ClickRows(clicks, x, 20.0)):
        for batch in (torch.tensor([6, 0, 3, 5]), torch.arange(7), torch.tensor([2, 4])):
            def loss(theta, fake, batch):
                return form(fake).loss(theta, batch)

            torch.testing.assert_close(loss(theta, fake, batch), written_out(theta, fake, batch))
            for argnums in (0, 1):  # the inner gradient on Θ and on X
                torch.testing.assert_close(torch.func.grad(loss, argnums)(theta, fake, batch),
                                           torch.func.grad(written_out, argnums)(theta, fake, batch))


def test_click_rows_gradient_is_the_same_on_every_call_with_two_threads():
    g = torch.Generator().manual_seed(0)
    users, items, dim = 2000, 5000, 32
    counts = torch.randint(5, 16, (users,), generator=g)
    clicks = Clicks(torch.cat((torch.zeros(1, dtype=torch.long), counts.cumsum(0))),
                    torch.randint(0, items, (int(counts.sum()),), generator=g))  # ≈ 20,000 clicks, items repeated
    theta = {"user_real": torch.randn(users, dim, generator=g), "user_fake": torch.randn(3, dim, generator=g),
             "item": torch.randn(items, dim, generator=g)}
    rows = ClickRows(clicks, torch.rand(3, items, generator=g), 20.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = [torch.func.grad(rows.loss)(theta, torch.arange(users + 3)) for _ in range(8)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0][k], other[k]) for other in grads[1:] for k in theta)


def test_sparse_data_trains_on_clicks_with_the_dense_rows_fit_and_hypergradient():
    data = make_synthetic(num_users=200, num_items=1500, mean_items_per_user=6, seed=2)  # 0.4 % clicked
    small = PoisonSetting(data.train, data.num_items, np.array([7, 900]), 3, 8)
    settings = WMFSettings(dim=4, epochs=4, unroll=2, batch_rows=64)
    clicks, dense = (WMFSurrogate(small, settings, seed=0, dtype=torch.float64) for _ in range(2))
    assert isinstance(clicks.real, Clicks)
    dense.real = clicks.real.dense(data.num_items, torch.float64)
    fake = project(torch.rand(3, data.num_items, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                   8, None)
    fits = [surrogate.fit(fake) for surrogate in (clicks, dense)]
    torch.testing.assert_close(fits[0].theta, fits[1].theta, rtol=1e-10, atol=1e-12)
    cotangent = dense.adversarial_gradient(fits[1].theta)
    torch.testing.assert_close(fits[0].vjp(cotangent), fits[1].vjp(cotangent), rtol=1e-9, atol=1e-12)
    assert float(fits[1].vjp(cotangent).abs().max()) > 1e-6


@pytest.mark.parametrize("name, users, items, train, fake, budget, clicks", [
    ("fed-ml", 6040, 3706, 802_552, 60, 133, False),  # 4.5 % clicked: RevAdv's dense rows
    ("gowalla", 3780, 5000, 65_165, 38, 17, True),  # the seeded CPU subsample, 0.34 %
    ("gowalla-full", 29_858, 40_981, 810_128, 299, 27, True),  # the whole split, 0.066 %
])
def test_real_datasets_fake_users_budget_and_row_form(shared_datasets, name, users, items, train, fake, budget, clicks):
    from experiments.sharpap_cell import load, setting
    dataset = load(name, str(shared_datasets))
    poison = setting(dataset, 0)
    assert (dataset.num_users, dataset.num_items, dataset.train.nnz, poison.num_fake, poison.budget) == (
        users, items, train, fake, budget)
    assert isinstance(WMFSurrogate(poison, WMFSettings(dim=2), 0).real, Clicks) == clicks


@pytest.mark.parametrize("base", list(GRADIENT_BASES))
def test_a_user_mean_objective_is_taken_in_chunks_of_users(setting, base, monkeypatch):
    objective = GRADIENT_BASES[base][0](setting, 0)
    surrogate = WMFSurrogate(setting, TINY_WMF, 0, dtype=torch.float64, objective=objective)
    theta = surrogate.initial_theta()
    theta["user_real"] = theta["user_real"] * 30  # spread the scores: every target somewhere in the ranking

    def whole(theta):
        return objective(theta["user_real"] @ theta["item"].T, surrogate.targets)

    monkeypatch.setattr(surrogate_module, "SCORE_CHUNK", 7 * setting.num_items)  # 7 users at once
    assert len(surrogate._user_chunks()) == (1 if base == "dada" else 22)  # DADA's weights: one chunk
    torch.testing.assert_close(surrogate.adversarial_loss(theta), whole(theta))
    torch.testing.assert_close(surrogate.adversarial_gradient(theta), torch.func.grad(whole)(theta))


def test_sharpap_with_zero_radius_has_revadvs_cotangent_bit_for_bit(setting):
    fit = WMFSurrogate(setting, TINY_WMF, 0).fit(torch.zeros(setting.num_fake, setting.num_items))
    cot, _ = SharpAP(SharpSettings(kappa=0.0))(WMFSurrogate(setting, TINY_WMF, 0), fit)
    reference, _ = plain_cotangent(WMFSurrogate(setting, TINY_WMF, 0), fit)
    assert all(torch.equal(cot[k], reference[k]) for k in cot)


@pytest.mark.parametrize("base", list(GRADIENT_BASES))
def test_sharpap_with_zero_radius_is_the_wrapped_attack_bit_for_bit(setting, base):
    options = AttackOptions(TINY_WMF, RevAdvSettings(iterations=4, cos_every=2), SharpSettings(kappa=0.0))
    plain, plain_history = gradient_attack(setting, options, 0, sharp=False, base=base)
    sharp, sharp_history = gradient_attack(setting, options, 0, sharp=True, base=base)
    assert np.array_equal(plain.lists.indptr, sharp.lists.indptr)
    assert np.array_equal(plain.lists.items, sharp.lists.items)
    assert [r["surrogate_hr"] for r in plain_history] == [r["surrogate_hr"] for r in sharp_history]
    assert sum("cos_G" in r for r in sharp_history) == 2
    assert all(r["cos_G"] == pytest.approx(1.0) for r in sharp_history if "cos_G" in r)


def test_wmw_loss_equals_its_sum_written_out():
    scores = torch.randn(4, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    targets, top, b = torch.tensor([2, 7]), 3, 0.5
    loss = wmw_loss(scores, targets, top, b)
    s = scores.detach().numpy()
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    terms, grad = [], np.zeros_like(s)
    for u in range(4):
        for t in targets.tolist():
            for j in np.argsort(-s[u])[:top]:
                x = (s[u, j] - s[u, t]) / b
                terms.append(sigmoid(x))
                slope = sigmoid(x) * (1 - sigmoid(x)) / b / (4 * len(targets) * top)
                grad[u, j] += slope
                grad[u, t] -= slope
    assert float(loss.detach()) == pytest.approx(np.mean(terms), rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(scores.grad.numpy(), grad, rtol=1e-10, atol=1e-14)


def test_rapu_starts_from_revadvs_x0_and_keeps_the_targets_in_every_projected_row(setting):
    seen: dict[str, list[torch.Tensor]] = {"revadv": [], "rapu": []}
    options = AttackOptions(TINY_WMF, RevAdvSettings(iterations=3))
    for base, rows in seen.items():
        gradient_attack(setting, options, 0, sharp=False, on_iteration=lambda row, x, rows=rows: rows.append(x),
                        base=base)
    assert torch.equal(seen["revadv"][0], seen["rapu"][0])
    for x in seen["rapu"][1:]:  # RAPU's projection: exactly the budget's top-k, the targets clicked
        assert (x.sum(1) == setting.budget).all() and (x[:, setting.targets] == 1).all()
    assert any(not torch.equal(a, b) for a, b in zip(seen["revadv"][1:], seen["rapu"][1:]))


def test_sharpap_perturbations_have_their_radius(setting):
    surrogate = WMFSurrogate(setting, TINY_WMF, 0)
    fit = surrogate.fit(project(torch.rand(setting.num_fake, setting.num_items), setting.budget, None))
    g = surrogate.adversarial_gradient(fit.theta)
    norm = lambda t: float(torch.sqrt(sum(v.pow(2).sum() for v in t.values())))  # noqa: E731
    rho = 0.3 * float(surrogate.target_norm(fit.theta))
    v = perturbation(surrogate, fit, g, SharpSettings(kappa=0.3, mode="global"))
    assert norm(v) == pytest.approx(rho, rel=1e-5)
    cos = sum(float((v[k] * g[k]).sum()) for k in g) / (norm(v) * norm(g))
    assert cos == pytest.approx(1.0, abs=1e-5)
    block = perturbation(surrogate, fit, g, SharpSettings(kappa=0.01, mode="block"))
    assert float(block["user_fake"].norm()) == 0.0  # L_adv does not read the fake users' embeddings
    for k in ("user_real", "item"):
        assert float(block[k].norm()) == pytest.approx(0.01 * float(fit.theta[k].norm()), rel=1e-5)
    steps = perturbation(surrogate, fit, g, SharpSettings(kappa=0.3, mode="ksteps"))
    assert norm(steps) <= rho * (1 + 1e-5)
    limit = 1.05 * float(surrogate.recommendation_loss(fit.theta, fit.fake))
    assert float(surrogate.recommendation_loss({k: fit.theta[k] + steps[k] for k in steps}, fit.fake)) <= limit
    # the worst-case direction raises the adversarial loss (it demotes the targets)
    worse = surrogate.adversarial_loss({k: fit.theta[k] + v[k] for k in v})
    assert float(worse) > float(surrogate.adversarial_loss(fit.theta))


@pytest.mark.parametrize("base", list(GRADIENT_BASES))
def test_gradient_attacks_raise_the_surrogate_hit_ratio(setting, base):
    surrogate = WMFSettings(dim=8, epochs=20, unroll=3, batch_rows=64, hit_k=10)
    _, history = gradient_attack(setting, AttackOptions(surrogate, RevAdvSettings(iterations=4)), 0, sharp=False,
                                 base=base)
    hrs = [row["surrogate_hr"] for row in history]
    assert max(hrs[1:]) > 2 * hrs[0]


def test_sharpap_table_command_on_synthetic_data(tmp_path, capsys):
    from experiments.sharpap import main

    main(["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--kappa", "0.5",
          "--out", str(tmp_path)])
    for name in ("table.csv", "table.md", "table.png", "alternatives.csv", "attacks.csv", "bands.csv", "utility.csv"):
        assert (tmp_path / name).is_file()
    alternatives = list(csv.DictReader((tmp_path / "alternatives.csv").open()))
    assert len(alternatives) == 5 * 5
    for row in alternatives:  # a wider top K finds at least as many targets
        for name in ("TargetHR", "Recall"):
            assert float(row[f"{name}@50"].split(" ± ")[0]) >= float(row[f"{name}@10"].split(" ± ")[0])
    assert {row["p TargetHR@50"] == "nan" for row in alternatives} == {True, False}  # no p for no attack
    bands = list(csv.DictReader((tmp_path / "bands.csv").open()))
    for victim in ("wrmf", "simgcl"):  # every run's 5 targets fall in exactly one band
        assert sum(int(row["targets"]) for row in bands if row["victim"] == victim and row["attack"] == "revadv") == 10
    clean = {(row["victim"], row["band"]): float(row["H@50"]) for row in bands if row["attack"] == "none"}
    compared = [row for row in bands if row["attack"] != "none" and clean[(row["victim"], row["band"])] > 0]
    assert len(compared) >= 10
    for row in compared:
        assert float(row["H@50 / none"]) == pytest.approx(float(row["H@50"]) / clean[(row["victim"], row["band"])])
    rows = (tmp_path / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * 5  # victims × conditions
    utility = list(csv.DictReader((tmp_path / "utility.csv").open()))  # popularity + victims × conditions
    assert [(row["model"], row["attack"]) for row in utility[:3]] == [("popularity", "none"), ("wrmf", "none"),
                                                                       ("wrmf", "random")]
    assert len(utility) == 1 + 5 * 5
    out = capsys.readouterr().out
    assert "revadv+sharpap" in out and "vs revadv" in out and "popularity" in out
    attacks = list(csv.DictReader((tmp_path / "attacks.csv").open()))
    assert "cos(G, G_sharp) mean" in attacks[0]  # a column of the table
    for row in attacks:  # random's rows hold the budget, all above the shortest real user's 5 items
        assert int(row["shortest real user"]) == 5 and float(row["share below it"]) == 0.0
        assert row["attack"] != "random" or float(row["items per fake user"]) == float(row["budget"])
    main(["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--kappa", "0.5",
          "--victims", "wrmf", "wmf-adam", "--attacks", "none", "revadv", "--out", str(tmp_path)])  # wrmf's cached
    out = capsys.readouterr().out
    assert "| synthetic | wrmf | revadv |" in out and "| synthetic | wmf-adam | revadv |" in out  # RevAdv's WRMF victim
    main(["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--kappa", "0.5",
          "--victims", "wrmf", "--attacks", "none", "rapu", "rapu+sharpap", "dada", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| synthetic | wrmf | rapu+sharpap |" in out and "vs rapu" in out  # RAPU+SharpAP is compared with RAPU
    assert "| synthetic | wrmf | dada |" in out
    main(["table", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--fake-share", "0.1",
          "--victims", "wrmf", "--attacks", "none", "random", "--out", str(tmp_path)])
    assert "| synthetic | random | 0 | 8 30 48 159 182 | 30 |" in capsys.readouterr().out  # 10% of 300 users
    main(["table", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--target-band", "tail",
          "--victims", "wrmf", "--attacks", "none", "random", "--out", str(tmp_path / "tail")])
    assert {row["band"] for row in csv.DictReader((tmp_path / "tail" / "bands.csv").open())} == {"tail"}
    tables = []
    for changes in ([], ["--victim-set", "wrmf.alpha=1"]):  # WRMF's confidence weight α 20 -> 1; every cell cached
        main(["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--kappa", "0.5", "--victims", "wrmf",
              "--attacks", "none", "revadv", "--out", str(tmp_path), *changes])  # but the changed victim's
        tables.append({row["attack"]: row["N@50"] for row in csv.DictReader((tmp_path / "table.csv").open())})
    assert "(mean ± std over 2 runs, ci preset; wrmf.alpha=1)" in (tmp_path / "table.md").read_text()
    assert tables[0]["none"] != tables[1]["none"] and tables[0]["revadv"] != tables[1]["revadv"]
    assert (tmp_path / "cells" / "victim-wrmf-e4-alpha1.0-synthetic-none-r0.json").is_file()


def test_first_run_splits_a_sweep_into_invocations_that_add_up_to_the_whole(tmp_path):
    from experiments.sharpap import main

    args = ["table", "--datasets", "synthetic", "--preset", "ci", "--victims", "wrmf", "--attacks", "none", "random"]
    main([*args, "--runs", "2", "--out", str(tmp_path / "whole")])
    main([*args, "--runs", "2", "--first-run", "1", "--out", str(tmp_path / "split")])
    assert "(mean ± std over run 1, ci preset)" in (tmp_path / "split" / "table.md").read_text()
    cells = {p.name for p in (tmp_path / "split" / "cells").glob("*.json")}
    assert cells and all(name.endswith("-r1.json") for name in cells)  # run 0 untouched
    main([*args, "--runs", "1", "--out", str(tmp_path / "split")])
    made = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "split" / "cells").glob("*.json")}
    main([*args, "--runs", "2", "--out", str(tmp_path / "split")])  # reads the cells the two invocations made
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "split" / "cells").glob("*.json")} == made
    assert (tmp_path / "split" / "table.csv").read_text() == (tmp_path / "whole" / "table.csv").read_text()


@pytest.mark.parametrize("band", ["head", "upper-torso", "lower-torso", "tail"])
def test_band_targets_fall_in_their_popularity_band(band):
    from experiments.sharpap_cell import band_option, load, setting
    from recsys.promotion_metrics import popularity_bands

    data = load("synthetic", None)
    targets = setting(data, 1, band=band).targets
    assert len(set(targets)) == 5 and np.array_equal(targets, setting(data, 1, band=band).targets)
    assert {band_option(name) for name in popularity_bands(data.train, data.num_items, targets)} == {band}
    assert not np.array_equal(targets, setting(data, 2, band=band).targets)  # each run its own targets


def test_uniform_targets_keep_their_stream_and_bad_bands_are_named():
    from experiments.sharpap_cell import load, setting
    from recsys.data import Dataset

    data = load("synthetic", None)
    assert setting(data, 0).targets.tolist() == setting(data, 0, band="uniform").targets.tolist() == [8, 30, 48, 159, 182]
    with pytest.raises(ValueError, match="target band must be one of uniform, head"):
        setting(data, 0, band="torso")
    tiny = Interactions.from_pairs(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 2]), 3)
    with pytest.raises(ValueError, match="the head band holds 0 items, fewer than the 5 targets"):
        setting(Dataset("tiny", 3, 8, tiny, tiny), 0, band="head")


def test_victim_set_changes_a_victims_training_and_model_in_cells_of_their_own():
    from experiments.sharpap import Experiment, build_parser

    changes = ["simgcl.ssl_weight=0", "lightgcn.lr=5e-3", "lightgcn.epochs=10", "sgl.layers=3", "sgl.include_ego=TRUE"]
    experiment = Experiment(build_parser().parse_args(["table", "--victim-set", *changes]))
    simgcl, lightgcn, sgl, wrmf = (experiment.victim_cell("fed-ml", v, None, 0, None)
                                   for v in ("simgcl", "lightgcn", "sgl", "wrmf"))
    assert simgcl.params["options"] == {"ssl_weight": 0.0}
    assert simgcl.key == "victim-simgcl-e10-ssl_weight0.0-fed-ml-none-r0"
    assert lightgcn.params["train"] == {"epochs": 10, "lr": 0.005, "batch_size": 32768} and "options" not in lightgcn.params
    assert lightgcn.key == "victim-lightgcn-e10-lr0.005-fed-ml-none-r0"
    assert sgl.params["options"] == {"include_ego": True, "layers": 3}  # the preset's option, changed, and a new one
    assert sgl.key == "victim-sgl-e10-include_egoTrue-layers3-fed-ml-none-r0"
    assert wrmf.key == "victim-wrmf-e10-fed-ml-none-r0"  # unchanged victims keep their cells
    default = Experiment(build_parser().parse_args(["table"]))
    assert default.victim_cell("fed-ml", "lightgcn", None, 0, None).key == "victim-lightgcn-e20-fed-ml-none-r0"


@pytest.mark.parametrize("entry, message", [
    ("simgcl.ssl_weight", "expected VICTIM.NAME=VALUE"),
    ("ncf.lr=1", "--victim-set: unknown ncf"),
    ("simgcl.dropout=0.1", "simgcl has no setting 'dropout'; choose a training setting (epochs, lr, batch, "
                           "weight_decay, dim) or a hyper-parameter (include_ego, layers, noise, reg, ssl_weight, "
                           "temperature)"),
    ("lightgcn.epochs=2.5", "epochs must be an integer >= 1"),
    ("lightgcn.batch=0", "batch must be an integer >= 1"),
    ("lightgcn.lr=0", "lr must be > 0"),
    ("lightgcn.weight_decay=-1", "weight_decay must be >= 0"),
    ("lightgcn.layers=2.5", "layers=2.5 does not fit its type int"),
    ("simgcl.noise=true", "noise=True does not fit its type float"),
    ("sgl.include_ego=maybe", "'maybe' is not a finite number, true or false"),
    ("sgl.temperature=nan", "'nan' is not a finite number"),
    ("wrmf.lr=inf", "'inf' is not a finite number"),
])
def test_victim_set_names_what_was_wrong(entry, message, capsys):
    from experiments.sharpap import main

    assert main(["table", "--victim-set", entry]) == 2  # before any data is loaded
    error = capsys.readouterr().err
    assert error.startswith("error: --victim-set") and message in error


def test_preset_model_options_reach_the_victim_cell():
    from experiments.sharpap import Experiment, build_parser

    experiment = Experiment(build_parser().parse_args(["table", "--preset", "lean"]))
    sgl = experiment.victim_cell("fed-ml", "sgl", None, 0, None)
    assert sgl.params["options"] == {"include_ego": False} and "include_egoFalse" in sgl.key
    wrmf = experiment.victim_cell("fed-ml", "wrmf", None, 0, None)
    assert "options" not in wrmf.params and wrmf.key == "victim-wrmf-e10-fed-ml-none-r0"
    assert "draw" not in wrmf.params  # draw 0 is the single-draw cell
    second = experiment.victim_cell("fed-ml", "wrmf", None, 0, None, draw=2)
    assert second.params["draw"] == 2 and second.key == "victim-wrmf-e10-fed-ml-none-r0-v2"


def test_command_line_rejects_bad_settings(capsys, tmp_path):
    from experiments.sharpap import main

    for option in ("--runs", "--victim-draws"):
        assert main(["table", option, "0"]) == 2
        assert "--runs, --threads and --victim-draws must be >= 1" in capsys.readouterr().err
    assert main(["table", "--runs", "2", "--first-run", "2"]) == 2
    assert "--first-run must be in 0..1: --runs 2 covers runs 0..1" in capsys.readouterr().err
    assert main(["table", "--victims", "wrmf,ncf"]) == 2
    assert capsys.readouterr().err.startswith("error: --victims: unknown ncf")
    with pytest.raises(ValueError, match="SharpAP mode"):
        SharpSettings(mode="sam")
    assert main(["table", "--gpus-per-cell", "0"]) == 2
    assert "--gpus-per-cell must be in (0, 1]" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["table", "--device", "cuda"]) == 2
        assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["iterates", "--iterates", "0", "-1"]) == 2
    assert "--iterates must be >= 0" in capsys.readouterr().err
    assert main(["iterates", "--anatomy"]) == 2
    assert "--anatomy goes with the table command" in capsys.readouterr().err
    assert main(["stealth", "--attacks", "none"]) == 2
    assert "name an attack other than none" in capsys.readouterr().err
    assert main(["table", "--degree-filter", "--screen", "nearest"]) == 2
    assert "--degree-filter and --screen are two defenses" in capsys.readouterr().err
    assert main(["table", "--screen", "nearest,pagerank"]) == 2
    assert capsys.readouterr().err.startswith("error: --screen: unknown pagerank")
    assert main(["stealth", "--attacks", "random", "--known-attacks", "revadv,none"]) == 2
    assert capsys.readouterr().err.startswith("error: --known-attacks: unknown none")
    assert main(["table", "--known-attacks", "targets-only", "--screen", "nearest"]) == 2
    assert "--known-attacks goes with the stealth command or a --screen naming" in capsys.readouterr().err
    assert main(["stealth", "--attacks", "random", "--known-attacks", ","]) == 2
    assert "--known-attacks: name at least one attack" in capsys.readouterr().err
    assert main(["stealth", "--attacks", "random", "--detectors", "nearest,pagerank"]) == 2
    assert capsys.readouterr().err.startswith("error: --detectors: unknown pagerank")
    assert main(["stealth", "--attacks", "random", "--detectors", ","]) == 2
    assert "--detectors: name at least one detector" in capsys.readouterr().err
    assert main(["table", "--detectors", "nearest"]) == 2
    assert "--detectors goes with the stealth command" in capsys.readouterr().err
    assert main(["table", "--datasets", "amazon-book", "--data-dir", str(tmp_path)]) == 2  # before any run
    assert f"missing {tmp_path / 'amazon-book' / 'train.txt'}" in capsys.readouterr().err


def test_iterates_command_follows_the_attack_cells_loop(tmp_path):
    from experiments.sharpap import main
    from experiments.sharpap_cell import load, setting

    main(["iterates", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--victims", "wrmf",
          "--iterates", "0,1,2,3,4,5,6,9", "--out", str(tmp_path)])  # the ci preset has 6 outer iterations
    assert (tmp_path / "iterates.png").is_file()
    rows = list(csv.DictReader((tmp_path / "iterates.csv").open()))
    assert [int(row["t"]) for row in rows] == list(range(7))
    first = rows[0]  # X₀'s fit is from scratch in the loop too
    assert float(first["surrogate H@50 (loop)"]) == float(first["surrogate H@50 (from scratch)"])
    best = max(range(7), key=lambda t: float(rows[t]["surrogate H@50 (loop)"]))  # first of the best, as the loop keeps
    [folder] = [path for path in (tmp_path / "cells").glob("iterates-*") if path.is_dir()]
    kept = FakeProfiles.load(folder / f"iterate-{best}.npz")
    profiles, _ = generate("revadv", setting(load("synthetic", None), 0), PRESETS["ci"], 0)  # the attack cell's call
    assert np.array_equal(kept.lists.items, profiles.lists.items)
    assert np.array_equal(kept.lists.indptr, profiles.lists.indptr)


def test_cuda_and_band_cells_get_their_own_keys_and_default_cells_keep_theirs():
    from experiments.sharpap import Experiment, build_parser

    cpu = Experiment(build_parser().parse_args(["table"]))
    cuda = Experiment(build_parser().parse_args(["table", "--device", "cuda"]))
    assert cpu.attack_cell("fed-ml", "revadv", 0).key == "attack-fed-ml-revadv-lean-i30-r0"
    assert "device" not in cpu.victim_cell("fed-ml", "wrmf", None, 0, None).params
    assert cuda.attack_cell("fed-ml", "revadv", 0).key == "attack-fed-ml-revadv-lean-i30-cuda-r0"
    victim = cuda.victim_cell("fed-ml", "wrmf", None, 0, None)
    assert victim.key == "victim-wrmf-e10-cuda-fed-ml-none-r0" and victim.params["device"] == "cuda"
    band = Experiment(build_parser().parse_args(["table", "--target-band", "tail", "--fake-share", "0.05"]))
    attack = band.attack_cell("fed-ml", "revadv", 0)
    assert attack.key == "attack-fed-ml-revadv-lean-i30-ttail-n0.05-r0" and attack.params["target_band"] == "tail"
    assert band.victim_cell("fed-ml", "wrmf", None, 0, None).key == "victim-wrmf-e10-fed-ml-none-ttail-n0.05-r0"
    assert band.popularity_key("fed-ml", 0) == "popularity-fed-ml-ttail-r0"
    assert "target_band" not in cpu.attack_cell("fed-ml", "revadv", 0).params
    rapu = cpu.attack_cell("fed-ml", "rapu+sharpap", 0)  # a gradient attack: the preset's settings are its parameters
    assert rapu.key == "attack-fed-ml-rapu+sharpap-lean-i30-k0.1-block-r0" and "surrogate" in rapu.params
    mixed = Experiment(build_parser().parse_args(["table", "--preset", "paper", "--victim-preset", "lean"]))
    attack = mixed.attack_cell("fed-ml", "revadv", 0)  # the paper preset's attack, the lean preset's victims
    assert attack.key == "attack-fed-ml-revadv-paper-i30-r0" and attack.params["surrogate"]["dim"] == 128
    victim = mixed.victim_cell("fed-ml", "sgl", attack.key[len("attack-"):], 0, None)
    assert victim.key == "victim-sgl-e10-include_egoFalse-fed-ml-revadv-paper-i30-r0"
    assert victim.params["train"] == {"epochs": 10, "lr": 1e-3, "batch_size": 32768} and victim.params["dim"] == 64
    assert mixed.victim_cell("fed-ml", "sgl", None, 0, None).key == cpu.victim_cell("fed-ml", "sgl", None, 0, None).key


def test_anatomy_cells_keep_the_table_cells_apart_and_show_simgcls_spread_of_popularity(tmp_path):
    from experiments.sharpap import Experiment, build_parser, main

    plain = Experiment(build_parser().parse_args(["table"])).victim_cell("fed-ml", "simgcl", None, 0, None)
    anatomy = Experiment(build_parser().parse_args(["table", "--anatomy"])).victim_cell("fed-ml", "simgcl", None, 0, None)
    assert anatomy.key == plain.key + "-anatomy" and anatomy.params["measures"] == [*plain.params["measures"], "anatomy"]
    main(["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--victims", "lightgcn", "simgcl",
          "--attacks", "none", "random", "--anatomy", "--out", str(tmp_path)])
    rows = {(row["victim"], row["attack"]): row for row in csv.DictReader((tmp_path / "anatomy.csv").open())}
    assert set(rows) == {(v, at) for v in ("lightgcn", "simgcl") for at in ("none", "random")}
    assert rows[("lightgcn", "none")]["|p| fake / real"] == "" != rows[("lightgcn", "random")]["|p| fake / real"]
    for attack in ("none", "random"):  # LightGCN's item norms follow popularity and its top 20 leaves out the tail
        lightgcn, simgcl = rows[("lightgcn", attack)], rows[("simgcl", attack)]
        assert float(lightgcn["ρ(|q|, count)"]) > 0.9 > float(simgcl["ρ(|q|, count)"])
        assert float(simgcl["tail share of top 20"]) > 0.2 > float(lightgcn["tail share of top 20"])
        assert float(simgcl["cos(p_u, q_k)"]) < float(lightgcn["cos(p_u, q_k)"])


def test_anatomy_table_averages_each_measure_over_the_runs_that_measure_it():
    """A run whose fake users a screen dropped has no fake-user norm: the column is the mean of the other runs."""
    from experiments.sharpap import build_parser
    from experiments.sharpap_tables import Tables

    tables = Tables(build_parser().parse_args(["table", "--datasets", "synthetic", "--runs", "3", "--victims", "wrmf",
                                               "--attacks", "random", "--anatomy"]))
    runs = [{"hr@20": 0.1, "anatomy/target_cos": 0.2}, {"hr@20": 0.3, "anatomy/target_cos": 0.4,
                                                         "anatomy/fake_to_real_user_norm": 2.0},
            {"hr@20": 0.5, "anatomy/target_cos": 0.6, "anatomy/fake_to_real_user_norm": 3.0}]
    [row] = tables.anatomy_table({("synthetic", "random", "wrmf", r): x for r, x in enumerate(runs)})
    assert row["H@20"] == pytest.approx(0.3) and row["cos(p_u, q_t)"] == pytest.approx(0.4)
    assert row["|p| fake / real"] == 2.5 and "needed cos" not in row


def test_stealth_command_scores_every_attacks_fake_users_with_every_detector(tmp_path):
    """Targets-only's fake users (5 targets, uniform among the items) are the least popular profiles; 5 items long,
    as the shortest real users here, they tie with those on length (none caught at 1 %). The supervised detector
    catches Random's fake users."""
    from experiments.sharpap import main

    main(["stealth", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--attacks", "random", "targets-only",
          "--out", str(tmp_path)])
    rows = {(row["detector"], row["attack"]): row for row in csv.DictReader((tmp_path / "stealth.csv").open())}
    detectors = ("length", "popularity", "degsim", "nearest", "fraudar", "supervised", "supervised-graph",
                 "supervised-per-attack", "supervised-graph-per-attack", "supervised-graph-mlp",
                 "supervised-graph-mlp-per-attack", "supervised-gnn", "supervised-gnn-per-attack")
    assert set(rows) == {(d, a) for d in detectors for a in ("random", "targets-only")}
    caught = "caught at 1% of the real"
    popular = rows[("popularity", "targets-only")]
    assert popular["AUC"] == "1.0000 ± 0.0000" == popular[caught]
    assert float(rows[("length", "targets-only")]["AUC"].split(" ± ")[0]) > 0.9
    assert rows[("length", "targets-only")][caught] == "0.0000 ± 0.0000"
    # fitted on Random and Bandwagon fake users of other targets and seeds, the supervised detectors catch run 0's
    # and run 1's Random fake users, which length, DegSim and the nearest user score below most real users
    for supervised in detectors[5:]:
        assert rows[(supervised, "random")]["AUC"] == "1.0000 ± 0.0000" == rows[(supervised, "random")][caught]
    assert all(float(rows[(d, "random")]["AUC"].split(" ± ")[0]) < 0.5 for d in ("length", "degsim", "nearest"))
    assert (tmp_path / "stealth.png").is_file() and not list(tmp_path.glob("cells/victim-*"))


def test_stealth_command_scores_the_named_detectors_only_in_cells_of_their_own(tmp_path, monkeypatch):
    """``--detectors``: cells keyed by the detectors named, holding theirs only, with the numbers the cell of every
    detector holds; the table has their rows only. The cells run run-major, so each run's supervised detectors are
    fitted once however many attacks there are."""
    from experiments import sharpap
    from experiments.sharpap import main

    argv = ["stealth", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--attacks", "random",
            "targets-only", "--out", str(tmp_path)]
    main(argv)
    sharpap_cell.known_attack_detector.cache_clear()
    order = []
    monkeypatch.setattr(sharpap, "run_sweep", lambda cells, *rest, **named: order.extend(cell.key for cell in cells)
                        or run_sweep(cells, *rest, **named))
    main([*argv, "--detectors", "supervised-graph-mlp-per-attack,nearest"])
    tag = "-detectors-nearest-supervised-graph-mlp-per-attack"
    assert [key for key in order if key.startswith("stealth-")] == [
        f"stealth-synthetic-{attack}-r{run}{tag}" for run in (0, 1) for attack in ("random", "targets-only")]
    assert sharpap_cell.known_attack_detector.cache_info().misses == 2  # one fit per run
    every = json.loads((tmp_path / "cells" / "stealth-synthetic-random-r0.json").read_text())
    some = json.loads((tmp_path / "cells" / f"stealth-synthetic-random-r0{tag}.json").read_text())
    assert some["params"]["detectors"] == ["nearest", "supervised-graph-mlp-per-attack"]
    assert some["result"] == {name: every["result"][name] for name in some["params"]["detectors"]}
    rows = list(csv.DictReader((tmp_path / "stealth.csv").open()))
    assert [row["detector"] for row in rows] == ["nearest"] * 2 + ["supervised-graph-mlp-per-attack"] * 2


def test_degree_filter_drops_the_users_shorter_than_every_real_user_and_nothing_else(tmp_path):
    """With ``--degree-filter`` a victim trained on 3 fake users below the shortest real user (5 items on this data)
    and 3 above it is exactly the victim trained, unfiltered, on the 3 long ones alone."""
    from defenses.degree_filter import long_enough_users
    from experiments.sharpap import Experiment, build_parser
    from experiments.sharpap_cell import cell_setting, run_victim

    assert long_enough_users(Interactions.from_lists([[1, 2], [3], [4, 5, 6]]), 2).tolist() == [0, 2]
    args = ["table", "--datasets", "synthetic", "--preset", "ci"]
    plain, filtered = (Experiment(build_parser().parse_args(args + extra)) for extra in ([], ["--degree-filter"]))
    poison = cell_setting(plain.victim_cell("synthetic", "wrmf", None, 0, None).params)[1]
    assert poison.real_floor() == 5
    fillers = np.setdiff1d(np.arange(20), poison.targets)[:3]
    rows = [poison.targets[:3].tolist()] * 3 + [[*poison.targets, filler] for filler in fillers]  # 3 items, 6 items
    mixed, long = tmp_path / "mixed.npz", tmp_path / "long.npz"
    FakeProfiles(Interactions.from_lists(rows), 6).save(mixed)
    FakeProfiles(Interactions.from_lists(rows[3:]), 6).save(long)
    cell = filtered.victim_cell("synthetic", "wrmf", "mixed", 0, str(mixed))
    reference = plain.victim_cell("synthetic", "wrmf", "long", 0, str(long))
    assert cell.key.endswith("-degree-filter") and not reference.key.endswith("-degree-filter")
    defended, undefended = run_victim(cell.params, tmp_path), run_victim(reference.params, tmp_path)
    assert defended["dropped_users"] == 3 and "dropped_users" not in undefended
    for key in ("hr@10", "hr@50", "ndcg@50", "per_target/hr@50", "test/recall@20"):
        assert defended[key] == undefended[key]


def test_screen_that_catches_every_fake_user_trains_the_victim_of_the_screened_clean_data(tmp_path):
    """With ``--screen popularity`` targets-only's fake users (the targets alone: the least popular profiles) are all
    dropped, with the same real users as on clean data: the victim and its measures over the kept real users are
    exactly the clean run's under the same screen. Several detectors make one key whatever their order."""
    from experiments.sharpap import Experiment, build_parser, main

    main(["table", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--victims", "wrmf",
          "--attacks", "none", "targets-only", "--screen", "popularity", "--out", str(tmp_path)])
    rows = {row["attack"]: row for row in csv.DictReader((tmp_path / "table.csv").open())}
    fake_users = json.loads(next((tmp_path / "cells").glob("attack-*.json")).read_text())["result"]["num_fake"]
    assert float(rows["none"]["real users dropped"]) == float(rows["none"]["users dropped"]) > 0
    screened = rows["targets-only"]
    assert float(screened["users dropped"]) == fake_users + float(screened["real users dropped"])
    for key in ("H@10", "H@50", "N@50"):
        assert rows["targets-only"][key] == rows["none"][key]
    assert list((tmp_path / "cells").glob("victim-*-screen-popularity.json"))
    cell = Experiment(build_parser().parse_args(["table", "--screen", "popularity", "nearest", "popularity"])
                      ).victim_cell("synthetic", "wrmf", None, 0, None)
    assert cell.params["screen"] == ["nearest", "popularity"] and cell.key.endswith("-screen-nearest-popularity")


@pytest.fixture
def generated(monkeypatch) -> Iterator[list[tuple[str, int, tuple[int, ...]]]]:
    """Every call of the attack generator the SharpAP cells make in this process, as (attack, seed, targets); the
    supervised detectors' cache cleared before and after, so their fits call it."""
    made, generate = [], sharpap_cell.generate

    def recording(name, setting, options, seed):
        made.append((name, seed, tuple(setting.targets)))
        return generate(name, setting, options, seed)

    monkeypatch.setattr(sharpap_cell, "generate", recording)
    sharpap_cell.known_attack_detector.cache_clear()
    yield made
    sharpap_cell.known_attack_detector.cache_clear()


def test_supervised_screen_drops_every_random_fake_user_fitted_on_targets_and_seeds_of_its_own(tmp_path, generated):
    """``--screen supervised``: the detector the platform fits on its own Random and Bandwagon fake users drops all of
    run 0's Random fake users before the victim trains; those known fake users are run −1's (its targets and seeds),
    never the measured run's."""
    from experiments.sharpap import main

    main(["table", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--victims", "wrmf",
          "--attacks", "random", "--screen", "supervised", "--out", str(tmp_path)])
    [row] = csv.DictReader((tmp_path / "table.csv").open())
    attack = json.loads(next((tmp_path / "cells").glob("attack-*.json")).read_text())
    assert float(row["users dropped"]) - float(row["real users dropped"]) == attack["result"]["num_fake"]
    dataset = sharpap_cell.load("synthetic", None)
    known = tuple(sharpap_cell.setting(dataset, -1).targets)
    assert [m for m in generated if m[1] == -1] == [("random", -1, known), ("bandwagon", -1, known)]
    assert known != tuple(attack["result"]["targets"]) and [m[1] for m in generated if m[1] != -1] == [0]


def test_known_attacks_choose_what_the_supervised_detectors_learn_from(tmp_path, generated):
    """``--known-attacks targets-only``: every supervised detector is fitted on targets-only's fake users of run −1
    (its targets and seed) alone, and then catches all of run 0's; the stealth cells of that set get their own key,
    the screen's victim cells too, where a supervised detector screens."""
    from experiments.sharpap import Experiment, build_parser, main
    from experiments.sharpap_cell import SUPERVISED

    main(["stealth", "--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--attacks", "targets-only",
          "--known-attacks", "targets-only", "--out", str(tmp_path)])
    assert [m[:2] for m in generated if m[1] == -1] == [("targets-only", -1)] * len(SUPERVISED)  # one fit each
    rows = {row["detector"]: row for row in csv.DictReader((tmp_path / "stealth.csv").open())}
    for supervised in SUPERVISED:
        assert rows[supervised]["AUC"] == "1.0000 ± 0.0000" == rows[supervised]["caught at 1% of the real"]
    [cell] = (tmp_path / "cells").glob("stealth-*.json")
    assert cell.stem.endswith("-known-targets-only")
    assert json.loads(cell.read_text())["params"]["known_attacks"] == ["targets-only"]
    argv = ["table", "--known-attacks", "bandwagon,random,targets-only", "--screen"]
    cells = [Experiment(build_parser().parse_args(argv + [screen])).victim_cell("synthetic", "wrmf", None, 0, None)
             for screen in ("supervised-graph", "nearest")]
    assert cells[0].key.endswith("-screen-supervised-graph-known-bandwagon-random-targets-only")
    assert cells[0].params["known_attacks"] == ["bandwagon", "random", "targets-only"]
    assert cells[1].key.endswith("-screen-nearest") and "known_attacks" not in cells[1].params
    default = Experiment(build_parser().parse_args(["table", "--screen", "supervised"])).victim_cell(
        "synthetic", "wrmf", None, 0, None)
    assert default.key.endswith("-screen-supervised") and "known_attacks" not in default.params


def test_a_known_gradient_attack_is_learnt_from_its_own_attack_cell_at_run_minus_one(tmp_path, generated):
    """``--known-attacks random revadv``: RevAdv's known fake users are made once, by its attack cell at run −1 (the
    gradient attacks' settings, run −1's targets and seed), and read from that cell's file by every supervised
    detector (Random's are made with each detector); the stealth cells name the file and the settings in their key,
    a supervised screen's victim cells too. Fitted on them, every supervised detector catches all of run 0's RevAdv
    fake users."""
    from experiments.sharpap import Experiment, build_parser, main
    from experiments.sharpap_cell import SUPERVISED

    argv = ["--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--out", str(tmp_path)]
    main(["stealth", "--attacks", "revadv", "--known-attacks", "random,revadv", *argv])
    main(["stealth", "--attacks", "revadv", *argv])
    made = [m[:2] for m in generated]
    forms = len(SUPERVISED)  # Random made once per form and known set, Bandwagon per form; RevAdv by its cell only
    assert sorted(m for m in made if m[1] == -1) == [("bandwagon", -1)] * forms + [("random", -1)] * 2 * forms + [
        ("revadv", -1)]
    assert made.count(("revadv", 0)) == 1
    known_file = str(tmp_path / "cells" / "attack-synthetic-revadv-ci-i6-r-1" / "profiles.npz")
    cell = json.loads((tmp_path / "cells" / "stealth-synthetic-revadv-ci-i6-r0-known-random-revadv-ci-i6.json")
                      .read_text())
    assert cell["params"]["known_profiles"] == {"revadv": known_file}
    default = json.loads((tmp_path / "cells" / "stealth-synthetic-revadv-ci-i6-r0.json").read_text())
    assert "known_profiles" not in default["params"] and "known_attacks" not in default["params"]
    assert cell["params"]["known_injected"] == default["params"]["known_injected"] == "each alone"  # fit_joint's
    for name in SUPERVISED:  # all 3 caught at 1 %; fitted on Random and Bandwagon, the perceptron catches none
        assert cell["result"][name]["caught"] == 1.0 and cell["result"][name]["auc"] >= default["result"][name]["auc"]
    assert default["result"]["supervised-graph-mlp"]["caught"] == 0.0 and default["result"]["supervised"]["caught"] < 1
    screen = Experiment(build_parser().parse_args(["table", "--known-attacks", "revadv", "--screen", "supervised",
                                                   *argv])).victim_cell("synthetic", "wrmf", None, 0, None)
    assert screen.key.endswith("-screen-supervised-known-revadv-ci-i6")
    assert screen.params["known_profiles"] == {"revadv": known_file}
    assert [m[:2] for m in generated].count(("revadv", -1)) == 1  # its attack cell read from the cache
    with pytest.raises(ValueError, match="known gradient attacks revadv need the profiles of their run -1 attack"):
        sharpap_cell.known_attack_detector("synthetic", None, 0, 0.01, "supervised", ("revadv",), ())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA absent")
def test_attack_and_victims_on_cuda_equal_cpu(setting):
    """float64 surrogate: the same hypergradient on both devices; the float32 attack: the same surrogate hit ratios
    per iteration; every victim (float32) trains from the same CPU-drawn batches and views to the same scores and
    metrics within float tolerance."""
    from central.ranking_learner import TrainSettings, train_native
    from recsys.models.ranking import MODELS, make_model
    from recsys.promotion_metrics import promotion

    fake = torch.zeros(setting.num_fake, setting.num_items)
    fake[:, setting.targets] = 1.0
    grads = []
    for device in ("cpu", "cuda"):
        surrogate = WMFSurrogate(setting, TINY_WMF, seed=0, dtype=torch.float64, device=device)
        fit = surrogate.fit(fake)
        grads.append(fit.vjp(plain_cotangent(surrogate, fit)[0]))
        assert grads[-1].device == fake.device
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
    options = {device: AttackOptions(TINY_WMF, RevAdvSettings(iterations=3), device=device) for device in ("cpu", "cuda")}
    cpu_profiles, cpu_history = generate("revadv+sharpap", setting, options["cpu"], seed=0)
    _, gpu_history = generate("revadv+sharpap", setting, options["cuda"], seed=0)
    # float32 surrogate: near-ties may order differently, so the iterates are compared by their hit ratios
    assert [row["surrogate_hr"] for row in gpu_history] == pytest.approx([row["surrogate_hr"] for row in cpu_history],
                                                                          abs=0.05)

    train = cpu_profiles.inject(setting.train)
    for name in MODELS:
        results = []
        for device in ("cpu", "cuda"):
            model = make_model(name, train.num_users, setting.num_items, 8, torch.Generator().manual_seed(1)).to(device)
            train_native(model, train, TrainSettings(3, lr=1e-2, batch_size=128), seed=1)
            results.append((model.score_all(torch.arange(20)).cpu(), promotion(model, setting.train, setting.targets)))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-3, atol=1e-4, msg=name)
        assert results[1][1]["hr@50"] == pytest.approx(results[0][1]["hr@50"], abs=0.02), name


def test_injected_profiles_promote_the_targets_on_a_retrained_victim(setting):
    from attacks.implicit.heuristic import bandwagon_attack
    from central.ranking_learner import TrainSettings, train_native
    from recsys.models.ranking import make_model
    from recsys.promotion_metrics import promotion

    many = PoisonSetting(setting.train, setting.num_items, setting.targets, 30, setting.budget)  # 20% fake users

    def target_hr(train: Interactions) -> float:
        model = make_model("bpr", train.num_users, setting.num_items, 16, torch.Generator().manual_seed(0))
        train_native(model, train, TrainSettings(15, lr=1e-2, batch_size=256), seed=0)
        return float(promotion(model, setting.train, setting.targets, (20,))["hr@20"])

    clean = target_hr(setting.train)
    poisoned = target_hr(bandwagon_attack(many, np.random.default_rng(0)).inject(setting.train))
    assert poisoned > 3 * clean and poisoned > clean + 0.05  # measured: 0.023 -> 0.089


@pytest.mark.parametrize("threads, device, deterministic", [(1, "cpu", False), (2, "cpu", True), (2, "cuda", False)])
def test_cells_with_several_cpu_threads_train_a_victim_to_the_same_numbers(threads, device, deterministic):
    data = make_synthetic(num_users=2000, num_items=1000, mean_items_per_user=20, seed=4)
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        sharpap_cell.use_threads(threads, device)
        assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == deterministic
        if device == "cpu":
            trained = []
            for _ in range(2):
                model = make_model("bpr", data.num_users, data.num_items, 64, torch.Generator().manual_seed(0))
                train_native(model, data.train, TrainSettings(2, 1e-2, 8192), seed=0)
                trained.append(model.user_emb.detach().clone())
            assert torch.equal(*trained)
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def test_paired_p_is_nan_without_variation_in_the_differences():
    from experiments.sharpap_tables import paired_p

    assert np.isnan(paired_p([0.1], [0.2]))
    assert np.isnan(paired_p([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]))
    assert np.isnan(paired_p([0.3, 0.4, 0.5], [0.1, 0.2, 0.3]))  # a constant shift: t is infinite
    assert paired_p([0.3, 0.5, 0.4], [0.1, 0.2, 0.3]) == pytest.approx(0.0742, abs=1e-4)  # t = 3.46, 2 d.o.f.


def test_mean_over_draws_averages_numbers_and_per_target_lists():
    from experiments.sharpap_tables import mean_over_draws

    draws = [{"hr@10": 0.1, "per_target/hr@10": [0.0, 0.2], "peak_mib": 900.0},
             {"hr@10": 0.3, "per_target/hr@10": [0.4, 0.0], "peak_mib": 700.0}]
    assert mean_over_draws(draws) == {"hr@10": pytest.approx(0.2), "per_target/hr@10": [pytest.approx(0.2),
                                      pytest.approx(0.1)], "peak_mib": 900.0}


def test_victim_draws_retrain_each_victim_with_its_own_seeds_and_average_per_run(tmp_path):
    from experiments.sharpap import main

    args = ["table", "--datasets", "synthetic", "--runs", "2", "--preset", "ci", "--victims", "wrmf",
            "--attacks", "none", "random", "--out", str(tmp_path)]
    main(args)
    single = {p.name for p in (tmp_path / "cells").glob("victim-*.json")}
    main([*args, "--victim-draws", "3"])
    cells = {p.name: json.loads(p.read_text())["result"] for p in (tmp_path / "cells").glob("victim-*.json")}
    assert single < set(cells) and len(cells) == 3 * len(single)  # draw 0 is the single-draw cell, reused
    table = {row["attack"]: row for row in csv.DictReader((tmp_path / "table.csv").open())}
    assert "3 draws" in (tmp_path / "table.md").read_text()
    for attack in ("none", "random"):
        per_run = [[cells[name] for name in sorted(cells) if f"-{attack}" in name and f"-r{r}" in name]
                   for r in range(2)]
        assert all(len(draws) == 3 for draws in per_run)
        recalls = {draw["test/recall@20"] for draws in per_run for draw in draws}
        assert len(recalls) == 6  # every draw trained its own victim
        run_means = [np.mean([draw["hr@10"] for draw in draws]) for draws in per_run]
        assert float(table[attack]["H@10"].split(" ± ")[0]) == pytest.approx(np.mean(run_means), abs=5e-5)
        spread = np.mean([np.std([draw["hr@10"] for draw in draws], ddof=1) for draws in per_run])
        assert float(table[attack]["H@10 draw std"]) == pytest.approx(spread, abs=1e-9)

"""RevAdv's WMF-ALS surrogate: its fit is ALS, its hypergradient equals autograd through a per-item
closed-form solve, and RevAdv's loop on it clicks the targets, keeps the budget and promotes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.implicit import SURROGATE_PRESETS, AttackOptions, PoisonSetting, generate
from attacks.implicit.options import SURROGATES, make_surrogate, settings_type
from attacks.implicit.revadv import RevAdvSettings, plain_cotangent, project, run
from attacks.implicit.sharpap import SharpAP, SharpSettings
from attacks.implicit.wmf_als_surrogate import ALSSettings, ALSSurrogate
from recsys.data import make_synthetic
from recsys.data.dataset import Interactions

TINY_ALS = ALSSettings(dim=6, sweeps=4)


@pytest.fixture(scope="module")
def setting() -> PoisonSetting:
    torch.set_num_threads(1)
    data = make_synthetic(num_users=150, num_items=80, mean_items_per_user=12, seed=1)
    return PoisonSetting(data.train, data.num_items, np.array([4, 33, 70]), 6, 10)


def test_hypergradient_equals_autograd_through_the_closed_form_item_solve():
    train = Interactions.from_lists([[0, 1], [1, 2, 3], [4, 5], [0, 5, 6], [2, 6], [1, 4]])
    small = PoisonSetting(train, 7, np.array([3]), 2, 4)
    settings = ALSSettings(dim=3, sweeps=5, alpha=4.0, reg=0.1)
    surrogate = ALSSurrogate(small, settings, seed=0, dtype=torch.float64)
    fake = torch.tensor([[1.0, 0, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0, 1]], dtype=torch.float64)
    fit = surrogate.fit(fake)
    cotangent = surrogate.adversarial_gradient(fit.theta)
    users = torch.cat((fit.theta["user_real"], fit.theta["user_fake"]))
    x = fake.clone().requires_grad_()
    real = torch.zeros(6, 7, dtype=torch.float64)
    real[torch.from_numpy(train.row_ids()), torch.from_numpy(train.items)] = 1.0
    y = torch.cat((real, x))
    items = []
    for v in range(7):  # q_v = (PᵀC_vP + λI)⁻¹ PᵀC_v y_v, P and C_v constant, one item at a time
        confidence = torch.diag(1.0 + (settings.alpha - 1.0) * y[:, v].detach())
        system = users.T @ confidence @ users + settings.reg * torch.eye(3, dtype=torch.float64)
        items.append(torch.linalg.solve(system, users.T @ confidence @ y[:, v]))
    closed_form = torch.stack(items)
    assert torch.allclose(closed_form.detach(), fit.theta["item"], atol=1e-10)  # the fit ends on an item solve
    (reference,) = torch.autograd.grad((closed_form * cotangent["item"]).sum(), x)
    assert torch.allclose(fit.vjp(cotangent), reference, atol=1e-12)
    assert float(reference.abs().max()) > 1e-4  # a real signal, not two zeros


def test_the_fit_is_als_and_rejects_a_continuous_matrix(setting):
    fake = project(torch.rand(setting.num_fake, setting.num_items, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64), setting.budget, None)
    losses = []
    for sweeps in (1, 2, 4):  # the same start, more sweeps
        surrogate = ALSSurrogate(setting, ALSSettings(dim=6, sweeps=sweeps), seed=0, dtype=torch.float64)
        losses.append(float(surrogate.recommendation_loss(surrogate.fit(fake).theta, fake)))
    assert losses[0] > losses[1] > losses[2]  # every ALS sweep lowers the regularised objective
    with pytest.raises(ValueError, match="binary"):
        surrogate.fit(0.5 * fake)


def test_a_repeated_click_counts_once():
    fake = torch.tensor([[1.0, 0, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0, 1]])
    thetas = []
    for lists in ([[0, 1], [1, 2, 3], [4, 5]], [[0, 1, 1], [1, 2, 3], [4, 5, 4]]):
        small = PoisonSetting(Interactions.from_lists(lists), 7, np.array([3]), 2, 4)
        thetas.append(ALSSurrogate(small, ALSSettings(dim=3, sweeps=3), seed=0).fit(fake).theta)
    assert all(torch.equal(thetas[0][k], thetas[1][k]) for k in thetas[0])


def test_projection_clicks_the_targets_within_the_budget():
    x = torch.tensor([[0.9, 0.04, 0.3, 0.06, -1.0], [0.01, 0.02, 0.03, 0.04, 0.05]])
    clicked = torch.tensor([4])
    expected = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert torch.equal(project(x, 3, 0.05, clicked), expected)


def test_sharpap_with_zero_radius_is_revadv_bit_for_bit_on_als(setting):
    loop = RevAdvSettings(iterations=3, cos_every=1, threshold=0.1, click_targets=True)
    plain, plain_history = run(ALSSurrogate(setting, TINY_ALS, 0), setting, loop, np.random.default_rng(0),
                               plain_cotangent)
    sharp, sharp_history = run(ALSSurrogate(setting, TINY_ALS, 0), setting, loop, np.random.default_rng(0),
                               SharpAP(SharpSettings(kappa=0.0)))
    assert np.array_equal(plain.lists.items, sharp.lists.items)
    assert [r["surrogate_hr"] for r in plain_history] == [r["surrogate_hr"] for r in sharp_history]
    assert all(r["cos_G"] == pytest.approx(1.0) for r in sharp_history if "cos_G" in r)


@pytest.mark.parametrize("click_targets", [True, False])
def test_revadv_on_als_promotes_the_targets(setting, click_targets):
    options = AttackOptions(ALSSettings(dim=8, sweeps=6, hit_k=10),
                            RevAdvSettings(iterations=4, threshold=0.1, click_targets=click_targets))
    profiles, history = generate("revadv", setting, options, seed=0)
    hrs = [row["surrogate_hr"] for row in history]
    assert hrs.index(max(hrs)) > 0 and max(hrs) > 1.4 * hrs[0]  # X₀: 0.066, the best iterate: 0.096-0.098
    clicks = [len(set(setting.targets) & set(profiles.lists.user(f).tolist())) for f in range(setting.num_fake)]
    assert profiles.lists.lengths().max() <= setting.budget
    # clicked by construction, or chosen by the hypergradient alone (X₀ holds 2 target clicks, now ≥ 12)
    assert min(clicks) == 3 if click_targets else sum(clicks) >= setting.num_fake * 2


def test_surrogate_registry_round_trips_its_names(setting):
    for name, presets in SURROGATE_PRESETS.items():
        assert set(presets) == {"paper", "lean", "ci"}
        for options in presets.values():
            assert SURROGATES[type(options.surrogate)][0] == name and settings_type(name) is type(options.surrogate)
    assert isinstance(make_surrogate(setting, SURROGATE_PRESETS["wmf-als"]["ci"], 0), ALSSurrogate)
    with pytest.raises(ValueError, match="unknown surrogate 'svd'"):
        settings_type("svd")
    with pytest.raises(ValueError, match="invalid WMF-ALS"):
        ALSSettings(sweeps=0)


def test_als_cells_get_their_own_keys_and_settings():
    from experiments.sharpap import Experiment, build_parser
    from experiments.sharpap_cell import attack_options

    als = Experiment(build_parser().parse_args(["table", "--surrogate", "wmf-als"]))
    attack = als.attack_cell("fed-ml", "revadv", 0)
    assert attack.key == "attack-fed-ml-revadv-wmf-als-lean-i30-r0" and attack.params["surrogate_name"] == "wmf-als"
    assert attack_options(attack.params) == SURROGATE_PRESETS["wmf-als"]["lean"]
    default = Experiment(build_parser().parse_args(["table", "--preset", "paper"]))
    for cell in (als.attack_cell("fed-ml", "random", 0), default.attack_cell("fed-ml", "random", 0)):
        assert cell.key == "attack-fed-ml-random-r0" and "surrogate" not in cell.params  # one heuristic cell for all


def test_table_and_iterates_commands_with_the_als_surrogate(tmp_path):
    import csv

    from experiments.sharpap import main

    common = ["--datasets", "synthetic", "--runs", "1", "--preset", "ci", "--surrogate", "wmf-als", "--victims", "wrmf"]
    main(["table", *common, "--attacks", "none", "revadv", "revadv+sharpap", "--out", str(tmp_path)])
    attacks = {row["attack"]: row for row in csv.DictReader((tmp_path / "attacks.csv").open())}
    for row in attacks.values():
        assert float(row["surrogate H@50 best"]) > float(row["surrogate H@50 (X₀)"])
    main(["iterates", *common, "--iterates", "0,1,2,6", "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "iterates.csv").open()))
    assert [int(row["t"]) for row in rows] == [0, 1, 2, 6]
    for row in rows:  # every ALS fit starts from the seed's draw, so the loop's score is the from-scratch score
        assert float(row["surrogate H@50 (loop)"]) == float(row["surrogate H@50 (from scratch)"])

"""TCD (Π, pseudo-labels, Algorithm 1 learner), AT/RAT perturbations, the rating split, MF and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from central.app import train_central
from central.rating_mf import MatrixFactorization, MFConfig, RatingMFLearner
from central.rating_split import RatingGrid, split_ratings
from central.target_metrics import evaluate_targets, robustness_improvement
from defenses import DEFENSES
from defenses.adversarial_training import EPSILON, AdversarialPerturbation, RandomPerturbation
from defenses.tcd import TCDSettings, TripleCooperativeLearner, agreed_pseudo_labels, tcd_settings
from recsys.data.dataset import Ratings
from tests.test_data_poisoning import make_ratings

STARS = RatingGrid(1.0, 5.0, 1.0)  # normalised grid 0.2, 0.4, ..., 1.0
SMALL_MF = MFConfig(dim=8, batch_size=64, lr=0.05, epochs=10)


def test_projection_maps_onto_the_rating_grid():
    values = torch.tensor([-0.3, 0.0, 0.29, 0.31, 0.49, 0.69, 0.95, 1.4])
    np.testing.assert_allclose(STARS.project(values).numpy(), [0.2, 0.2, 0.2, 0.4, 0.4, 0.6, 1.0, 1.0], atol=1e-6)
    half_stars = RatingGrid(0.5, 4.0, 0.5)  # FilmTrust: 0.125, 0.25, ..., 1.0
    projected = half_stars.project(torch.rand(1000) * 1.4 - 0.2)
    assert set(np.round(projected.numpy() * 8, 4)) <= set(np.arange(1.0, 9.0))


def test_pseudo_labels_are_exactly_the_unlabelled_pairs_where_the_other_two_agree():
    first = torch.tensor([[0.21, 0.58, 0.95], [0.41, 0.79, 0.10]])
    second = torch.tensor([[0.19, 0.62, 0.65], [0.39, 0.81, 0.25]])
    labelled = torch.tensor([[False, True, False], [False, False, False]])
    # levels first: [[0, 2, 4], [1, 3, 0]]; second: [[0, 2, 2], [1, 3, 0]]
    labels = agreed_pseudo_labels(first, second, labelled, STARS, "clamped")
    assert _pairs(labels) == {(0, 0): 0.2, (1, 0): 0.4, (1, 1): 0.8, (1, 2): 0.2}
    half = agreed_pseudo_labels(first, second, labelled, STARS, "clamped", rate=0.5,
                                generator=torch.Generator().manual_seed(0))
    assert set(_pairs(half)) <= set(_pairs(labels))


def _pairs(labels) -> dict[tuple[int, int], float]:
    return {(int(u), int(i)): round(float(v), 4) for u, i, v in zip(labels.users, labels.items, labels.values)}


# Hand-built predictions of two models on a 1 x 8 row (1-5 stars, normalised by 5; nothing labelled).
# Stars: -2.0, -0.2, 0.4, 1.2, 3.1, 4.9, 5.2, 7.0 against -0.6, 0.2, 1.4, 0.8, 2.9, 5.1, 4.6, 6.8.
FIRST = torch.tensor([[-0.40, -0.04, 0.08, 0.24, 0.62, 0.98, 1.04, 1.40]])
SECOND = torch.tensor([[-0.12, 0.04, 0.28, 0.16, 0.58, 1.02, 0.92, 1.36]])


@pytest.mark.parametrize("projection, expected", [
    # clipped levels: 1, 1, 1, 1, 3, 5, 5, 5 against 1, 1, 1, 1, 3, 5, 5, 5: every pair agrees
    ("clamped", {0: 0.2, 1: 0.2, 2: 0.2, 3: 0.2, 4: 0.6, 5: 1.0, 6: 1.0, 7: 1.0}),
    # unclipped stars: -2, 0, 0, 1, 3, 5, 5, 7 against -1, 0, 1, 1, 3, 5, 5, 7; below 1 star -> 0
    ("zero-below", {1: 0.0, 3: 0.2, 4: 0.6, 5: 1.0, 6: 1.0, 7: 1.4}),
    # and at or above 5 stars -> 0
    ("authors", {1: 0.0, 3: 0.2, 4: 0.6, 5: 0.0, 6: 0.0, 7: 0.0}),
])
def test_each_projection_labels_hand_built_predictions_off_the_scale_as_specified(projection, expected):
    labels = agreed_pseudo_labels(FIRST, SECOND, torch.zeros(1, 8, dtype=torch.bool), STARS, projection)
    assert _pairs(labels) == {(0, item): value for item, value in expected.items()}


def test_half_star_projection_zeroes_the_bin_below_the_lowest_rating():
    half_stars = RatingGrid(0.5, 4.0, 0.5)  # FilmTrust: 0.125, 0.25, ..., 1.0
    first = torch.tensor([[0.0, 0.02, 0.05, 0.126, 0.99]])  # 0, 0.08, 0.2, 0.504, 3.96 stars
    second = torch.tensor([[0.01, -0.02, 0.07, 0.12, 1.01]])  # 0.04, -0.08, 0.28, 0.48, 4.04 stars
    labelled = torch.zeros(1, 5, dtype=torch.bool)
    assert _pairs(agreed_pseudo_labels(first, second, labelled, half_stars, "clamped")) == {
        (0, 0): 0.125, (0, 1): 0.125, (0, 2): 0.125, (0, 3): 0.125, (0, 4): 1.0}
    assert _pairs(agreed_pseudo_labels(first, second, labelled, half_stars, "zero-below")) == {
        (0, 0): 0.0, (0, 1): 0.0, (0, 3): 0.125, (0, 4): 1.0}
    assert _pairs(agreed_pseudo_labels(first, second, labelled, half_stars, "authors")) == {
        (0, 0): 0.0, (0, 1): 0.0, (0, 3): 0.125, (0, 4): 0.0}
    with pytest.raises(ValueError, match="projection"):
        agreed_pseudo_labels(first, second, labelled, half_stars, "round")


def test_robustness_improvement_on_a_hand_case():
    assert robustness_improvement(0.02, 0.0, 0.1) == pytest.approx(0.8)
    assert robustness_improvement(0.1, 0.0, 0.1) == pytest.approx(0.0)
    assert robustness_improvement(0.0, 0.0, 0.1) == pytest.approx(1.0)
    assert math.isnan(robustness_improvement(0.05, 0.1, 0.1))
    assert math.isnan(robustness_improvement(0.0, 0.0002, 0.0))  # the attack lowered HR: RI undefined


def _model(users: int = 6, items: int = 5) -> MatrixFactorization:
    return MatrixFactorization(users, items, MFConfig(dim=4), torch.Generator().manual_seed(0))


def _reference_loss(model: MatrixFactorization, users, items, values, delta_users=None, delta_items=None):
    """The MF objective written with autograd: MSE + λ(mean p² + mean q²) (+ the perturbed MSE)."""
    p_table = model.user_factors.clone().requires_grad_()
    q_table = model.item_factors.clone().requires_grad_()
    p, q = p_table[users], q_table[items]
    loss = ((values - (p * q).sum(1)) ** 2).mean() + model.config.l2 * (p.pow(2).mean() + q.pow(2).mean())
    if delta_users is not None:
        perturbed = (p + delta_users[users]) * (q + delta_items[items])
        loss = loss + ((values - perturbed.sum(1)) ** 2).mean()
    return loss, p_table, q_table


def test_hand_written_mf_gradients_match_autograd():
    model = MatrixFactorization(7, 9, MFConfig(dim=5, l2=0.05), torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(4)
    users, items = torch.randint(0, 7, (40,), generator=generator), torch.randint(0, 9, (40,), generator=generator)
    values = torch.rand(40, generator=generator)
    mse, grad_users, grad_items = model.clean_gradients(users, items, values)
    loss, p_table, q_table = _reference_loss(model, users, items, values)
    reference = torch.autograd.grad(loss, [p_table, q_table])
    assert mse < loss.item()  # the MSE without the regulariser
    torch.testing.assert_close(grad_users, reference[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_items, reference[1], rtol=1e-5, atol=1e-7)
    delta_users, delta_items = RandomPerturbation(epsilon=0.3)(model, grad_users, grad_items)
    model.add_perturbed_gradients(users, items, values, delta_users, delta_items, grad_users, grad_items)
    loss, p_table, q_table = _reference_loss(model, users, items, values, delta_users, delta_items)
    reference = torch.autograd.grad(loss, [p_table, q_table])
    torch.testing.assert_close(grad_users, reference[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_items, reference[1], rtol=1e-5, atol=1e-7)


def test_adversarial_perturbation_rows_have_norm_epsilon_along_the_loss_gradient():
    model = _model()
    users, items, values = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([1.0, 0.2, 0.8])
    _, grad_users, grad_items = model.clean_gradients(users, items, values)
    delta_users, delta_items = AdversarialPerturbation()(model, grad_users, grad_items)
    np.testing.assert_allclose(delta_users[[0, 1]].norm(dim=1).numpy(), EPSILON, rtol=1e-5)
    np.testing.assert_allclose(delta_items[[2, 3, 4]].norm(dim=1).numpy(), EPSILON, rtol=1e-5)
    assert delta_users[2:].abs().sum() == 0 and delta_items[:2].abs().sum() == 0  # rows outside the batch
    clean = _reference_loss(model, users, items, values)[0]
    assert _reference_loss(model, users, items, values, delta_users, delta_items)[0] > 2 * clean  # it ascends
    delta_users, delta_items = RandomPerturbation()(model, grad_users, grad_items)
    np.testing.assert_allclose(delta_items.norm(dim=1).numpy(), EPSILON, rtol=1e-5)


def test_split_holds_out_one_rating_per_user_and_splits_the_rest_nine_to_one():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=4)
    assert sorted(split.test.users.tolist()) == list(range(users))
    assert len(split.valid) == round(0.1 * (len(ratings.values) - users))
    pairs = [set(zip(p.users.tolist(), p.items.tolist())) for p in (split.train, split.valid, split.test)]
    assert sum(map(len, pairs)) == len(ratings.values) and len(set.union(*pairs)) == len(ratings.values)
    assert split.train.values.max() <= 1.0 and split.train.values.min() >= 0.2
    again = split_ratings(ratings, users, items, seed=4)
    assert torch.equal(again.test.items, split.test.items)


def test_mf_learner_lowers_validation_mse_and_keeps_the_best_epoch():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    learner = RatingMFLearner(split, SMALL_MF, seed=0)
    history = train_central(learner, SMALL_MF.epochs)
    assert history[-1]["valid_mse"] == pytest.approx(min(row["valid_mse"] for row in history))
    assert history[-1]["valid_mse"] < 0.5 * history[0]["valid_mse"]


def test_tcd_pretrains_then_adds_pseudo_labels_and_shares_three_item_tables():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    learner = TripleCooperativeLearner(split, SMALL_MF, seed=0, settings=TCDSettings(pretrain_epochs=2))
    history = train_central(learner, 4)
    assert [row.get("pseudo_labels") for row in history[1:3]] == [0.0, 0.0]
    unlabelled = users * items - len(split.train)
    assert all(0 < row["pseudo_labels"] <= unlabelled for row in history[3:5])
    assert sorted(learner.shared_parameters()) == ["item_factors_0", "item_factors_1", "item_factors_2"]
    for bad, reason in (({"pseudo_label_rate": 1.5}, "pseudo_label_rate"), ({"projection": "x"}, "projection"),
                        ({"reported": "x"}, "reported")):
        with pytest.raises(ValueError, match=reason):
            TCDSettings(pretrain_epochs=1, **bad)
    assert set(DEFENSES) == {"none", "at", "rat", "tcd"}


def test_tcd_reports_the_best_validation_or_the_last_epoch_model():
    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    finals = {}
    for reported in ("best", "final"):
        learner = TripleCooperativeLearner(split, SMALL_MF, 0, TCDSettings(pretrain_epochs=1, reported=reported))
        train_central(learner, 5)
        finals[reported] = learner.final_model().mse(split.valid)
        if reported == "best":
            assert finals[reported] == pytest.approx(learner.best.mse)
    assert finals["best"] <= finals["final"]
    assert tcd_settings("filmtrust") == TCDSettings(pretrain_epochs=6, projection="authors", reported="final")
    assert tcd_settings("ml-100k") == TCDSettings(pretrain_epochs=4, projection="clamped", reported="best")
    assert tcd_settings("ml-100k", projection="authors", reported=None).projection == "authors"


def test_target_and_test_hit_ratio_on_a_hand_built_model():
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 2, 0, 3, 1, 2, 4])
    ratings = Ratings(users, items, np.full(8, 3.0, dtype=np.float32), (1.0, 5.0), 1.0)
    split = split_ratings(ratings, 3, 6, seed=0)
    model = MatrixFactorization(3, 6, MFConfig(dim=1), torch.Generator())
    with torch.no_grad():
        model.user_factors.fill_(1.0)
        model.item_factors.copy_(torch.arange(6, dtype=torch.float32).view(-1, 1))  # higher id, higher score
    report = evaluate_targets(model, split, np.array([4, 5]), k=2)
    # open pairs: (u0, 4), (u1, 4) at rank 1 behind item 5; (u0, 5), (u1, 5), (u2, 5) at rank 0
    assert report.target_hr == 1.0 and report.target_rank == pytest.approx(2 / 5)
    # every user's top 2 among its unrated items is {5, 4}: only user 2 can hit, if its test item is 4
    assert report.test_hr == pytest.approx(float(int(split.test.items[split.test.users == 2]) == 4) / 3)


def test_table_commands_write_tables_with_the_papers_numbers_and_reuse_cached_cells(tmp_path, monkeypatch, capsys):
    import csv

    from experiments import tcd

    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    monkeypatch.setattr(tcd, "_split", lambda dataset, data_dir, seed: split)
    argv = ["--datasets", "ml-100k", "--targets", "random", "--attacks", "average", "pga", "--seeds", "0,1",
            "--epochs", "2", "--out", str(tmp_path)]
    assert tcd.main(["table3", *argv]) == 0
    with (tmp_path / "table3.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["attack"] for row in rows] == ["average", "pga"]
    for row in rows:
        hr = {name: float(row[name]) for name in ("Origin", "Attack", "AT", "RAT", "TCD")}
        assert all(0.0 <= value <= 1.0 for value in hr.values())
        expected = robustness_improvement(hr["TCD"], hr["Origin"], hr["Attack"])
        assert float(row["RI_TCD"]) == pytest.approx(expected, nan_ok=True)
    assert rows[0]["paper O/A/AT/RAT/TCD"] == "0.0233 / 0.1579 / 0.1741 / 0.1525 / 0.0340"
    assert (tmp_path / "table4.md").read_text().startswith("## Table 4")
    assert len(list((tmp_path / "cells" / "profiles").glob("*.npz"))) == 4  # 2 attacks x 2 seeds, shared
    monkeypatch.setattr(tcd, "run_cell", lambda params, folder: pytest.fail("a cached cell was recomputed"))
    assert tcd.main(["table4", *argv]) == 0
    assert capsys.readouterr().out.count("| pga |") == 4  # table3 and table4, printed by both commands


def test_table2_and_fig4_commands_write_their_outputs(tmp_path, monkeypatch):
    import csv

    from experiments import tcd

    ratings, users, items = make_ratings()
    split = split_ratings(ratings, users, items, seed=0)
    monkeypatch.setattr(tcd, "_split", lambda dataset, data_dir, seed: split)
    argv = ["--datasets", "ml-100k", "--targets", "random", "--attacks", "average", "--seeds", "0",
            "--epochs", "2", "--out", str(tmp_path)]
    assert tcd.main(["table2", *argv, "--knowledge-costs", "0.4", "1.0"]) == 0
    with (tmp_path / "table2.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0.0 <= float(row["kc=0.4"]) <= 1.0 and 0.0 <= float(row["kc=1"]) <= 1.0
    assert row["paper O/kc=0.2/0.4/0.6/0.8/1"].startswith("0.0233 / 0.1829")
    assert tcd.main(["fig4", *argv, "--rates", "0", "0.5", "1.0"]) == 0
    with (tmp_path / "fig4.csv").open() as handle:
        assert [float(r["pseudo_label_rate"]) for r in csv.DictReader(handle)] == [0.0, 0.5, 1.0]
    assert (tmp_path / "fig4.png").stat().st_size > 0
    # rate 0 is the undefended cell of table2 (kc 0.4); rate 1.0 is ML-100K's default, i.e. Table 3's TCD cell
    assert {path.stem for path in (tmp_path / "cells").glob("*tcd*.json")} == {
        "ml-100k-random-s0-average-kc0.4-as0.03-tcd", "ml-100k-random-s0-average-kc0.4-as0.03-tcd-rate0.5"}


def test_tcd_options_replace_the_dataset_defaults_in_their_own_cells():
    from experiments import tcd

    args = tcd.build_parser().parse_args(["table3", "--tcd-projection", "clamped", "--tcd-pretrain", "1"])
    cell = tcd._params(args, "filmtrust", "unpopular", 0, "random", "tcd")
    assert cell.key == "filmtrust-unpopular-s0-random-kc0.4-as0.03-tcd-pi-clamped-pre1"
    assert cell.params["tcd"] == {"projection": "clamped", "pretrain_epochs": 1}
    assert "tcd" not in tcd._params(args, "filmtrust", "unpopular", 0, "random", "none").params
    defaults = tcd.build_parser().parse_args(["table3"])
    assert tcd._params(defaults, "filmtrust", "unpopular", 0, "random", "tcd").key.endswith("-tcd")

"""Model-stealing attacks: Agr, the attention fusion, the stealing loss, the data split, the
attacker's access, the mixing defense, and an end-to-end ordering on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attacks.stealing import ATTACKS, StealingRun, StealingSettings
from attacks.stealing.attention import AttentionFusion, FusedClone
from attacks.stealing.loss import StealingObjective, stealing_loss
from central.objectives import InteractionObjective, interaction_mask, sample_negatives
from central.ranking_learner import fit
from central.stealing_data import AttackerView, QueryOracle, StealingSplit, filter_sparse
from defenses.mixing import MixingDefense
from recsys.data import load_dataset
from recsys.data.dataset import Interactions
from recsys.list_metrics import agreement, recall
from recsys.models.ranking import make_model, recommend, shared_parameter_names


def test_agreement_on_hand_built_lists():
    target = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    clone = torch.tensor([[4, 3, 9, 10], [8, 7, 6, 5]])  # 2 of 4 shared; all 4 shared (order ignored)
    assert agreement(target, clone) == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert agreement(target, target) == 1.0
    with pytest.raises(ValueError, match="equal shape"):
        agreement(target, clone[:, :3])


def test_recall_of_lists():
    lists = torch.tensor([[0, 1], [2, 3], [0, 1]])
    test = torch.zeros((3, 5), dtype=torch.bool)
    test[0, [1, 4]] = True
    test[1, 2] = True  # user 2 has no test items and is skipped
    assert recall(lists, test) == pytest.approx((1 / 2 + 1 / 1) / 2)


def test_attention_weights_sum_to_one_and_fuse_convexly():
    g = torch.Generator().manual_seed(0)
    fusion = AttentionFusion(8, g)
    with torch.no_grad():
        fusion.b.fill_(0.3)
    p, qc, qa = (torch.randn(5, 8, generator=g) for _ in range(3))
    alpha, beta = fusion.weights(p, qc, qa)
    torch.testing.assert_close(alpha + beta, torch.ones(5))
    assert bool((alpha > 0).all() and (beta > 0).all())
    # eqs. 5–6 written out: α = wᵀReLU(p⊙q^c) + b, α' = e^α / (e^α + e^β)
    a = torch.relu(p * qc) @ fusion.w + fusion.b
    b = torch.relu(p * qa) @ fusion.w + fusion.b
    torch.testing.assert_close(alpha, torch.exp(a) / (torch.exp(a) + torch.exp(b)))
    torch.testing.assert_close(fusion(p, qc, qa), alpha[:, None] * qc + beta[:, None] * qa)


def test_fused_clone_scores_with_the_fused_embedding_and_freezes_the_auxiliary_one():
    g = torch.Generator().manual_seed(1)
    model = make_model("bpr", 4, 6, 8, g)
    aux = torch.randn(6, 8, generator=g)
    clone = FusedClone(model, aux, g)
    users, items = torch.tensor([0, 3, 2]), torch.tensor([5, 1, 1])
    p = model.user_emb[users]
    expected = (p * clone.fusion(p, model.item_emb[items], aux[items])).sum(1)  # eq. 8
    torch.testing.assert_close(clone.score(users, items), expected)
    torch.testing.assert_close(clone.score_all(users)[torch.arange(3), items], expected.detach())
    assert "aux_items" not in dict(clone.named_parameters())
    assert set(shared_parameter_names(clone)) == {"model.item_emb", "fusion.w", "fusion.b"}


def test_stealing_loss_matches_a_hand_computation():
    # one user, list R = (a, b, c) with clone scores 2.0, 1.5, 1.8; one negative per entry
    ranked = torch.tensor([2.0, 1.5, 1.8])
    following = torch.tensor([1.5, 1.8, 0.0])
    has_next = torch.tensor([True, True, False])
    negatives = torch.tensor([[1.0], [1.2], [2.5]])
    m = 0.5

    def bpr(x, y):
        return -math.log(1 / (1 + math.exp(-(x - y))))

    def hinge(x, y):
        return max(0.0, m - (x - y))

    l_r = bpr(2.0, 1.5) + bpr(1.5, 1.8)  # eq. 11: consecutive ranks
    l_p = hinge(2.0, 1.0) + hinge(1.5, 1.2) + hinge(1.8, 2.5)  # eq. 12: sampled negatives
    got = stealing_loss(ranked, has_next, following, negatives, "bpr", "hinge", m)
    assert float(got) == pytest.approx(l_r + l_p, rel=1e-6)
    hinge_hinge = hinge(2.0, 1.5) + hinge(1.5, 1.8) + l_p
    assert float(stealing_loss(ranked, has_next, following, negatives, "hinge", "hinge", m)) == pytest.approx(hinge_hinge)


def test_stealing_objective_pairs_consecutive_ranks_and_never_samples_listed_or_seen_items():
    lists = torch.tensor([[3, 1, 4], [0, 2, 5]])
    interacted = torch.zeros((2, 8), dtype=torch.bool)
    interacted[0, 6] = True
    objective = StealingObjective(lists, interacted, negatives=5, batch_size=4)
    batches = list(objective.batches(torch.Generator().manual_seed(0)))
    assert sum(len(b[0]) for b in batches) == 6
    for users, items, has_next, following, negatives in batches:
        for u, j, nxt, f, negs in zip(users, items, has_next, following, negatives):
            row = lists[u].tolist()
            rank = row.index(int(j))
            assert bool(nxt) == (rank < 2) and (not nxt or int(f) == row[rank + 1])
            assert not set(negs.tolist()) & (set(row) | ({6} if u == 0 else set()))


def test_negative_sampling_avoids_forbidden_items():
    forbidden = torch.zeros((3, 10), dtype=torch.bool)
    forbidden[:, :8] = True
    drawn = sample_negatives(forbidden, torch.tensor([0, 1, 2, 0]), 50, torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) == {8, 9}


def test_filter_removes_sparse_users_and_items_until_stable():
    full = [0, 1, 2, 3, 4]
    # items 5 (4 test entries) and 6 (4 entries) go; user 5 (1 entry) goes; user 6 then has 4 left and goes
    train = Interactions.from_lists([full + [6], full + [6], full + [6], full, full, [0], [0, 1, 2, 3, 6]])
    test = Interactions.from_lists([[5], [5], [5], [5], [], [], []])
    train_f, test_f, num_items = filter_sparse(train, test, 7)
    assert (num_items, train_f.num_users, test_f.nnz) == (5, 5, 0)
    assert all(train_f.user(u).tolist() == full for u in range(5))


@pytest.fixture(scope="module")
def synthetic_split() -> StealingSplit:
    data = load_dataset("synthetic", num_users=400, num_items=120, mean_items_per_user=25, seed=3)
    return StealingSplit.from_dataset(data, seed=0, attacker_fraction=0.1)


def test_split_halves_are_disjoint_and_the_attacker_knows_a_tenth(synthetic_split):
    s = synthetic_split
    total = s.target_train.num_users + s.auxiliary.num_users
    assert abs(s.target_train.num_users - s.auxiliary.num_users) <= 1
    assert len(s.attacker_users) == round(0.1 * s.target_train.num_users) and total <= 400
    assert len(np.unique(s.attacker_users)) == len(s.attacker_users)
    again = StealingSplit.from_dataset(load_dataset("synthetic", num_users=400, num_items=120,
                                                    mean_items_per_user=25, seed=3), seed=0)
    np.testing.assert_array_equal(again.attacker_users, s.attacker_users)
    with pytest.raises(ValueError, match="attacker_fraction"):
        StealingSplit.from_dataset(load_dataset("synthetic", num_users=50, num_items=30), seed=0, attacker_fraction=0)


@pytest.fixture(scope="module")
def trained_target(synthetic_split):
    s = synthetic_split
    model = make_model("bpr", s.target_train.num_users, s.num_items, 16, torch.Generator().manual_seed(0))
    fit(model, InteractionObjective(s.target_train, s.num_items, "bpr", batch_size=512), 15, seed=0)
    return model


def test_attacks_read_only_the_allowed_target_users_and_rank_as_expected(synthetic_split, trained_target):
    s = synthetic_split
    oracle = QueryOracle(trained_target, s.target_train, s.num_items)
    view = AttackerView(s, oracle)
    run = StealingRun(view, StealingSettings(dim=16, k=10, epochs=15, finetune_epochs=15, seed=0))
    known = torch.from_numpy(s.attacker_users)
    truth = oracle.query(known, 10)
    agr = {name: agreement(truth, recommend(attack(run), torch.arange(len(known)), oracle.interacted[known], 10))
           for name, attack in ATTACKS.items()}
    # access: exactly the attacker's users, by index, and never more than its fraction
    assert view.read_target_users == set(s.attacker_users.tolist()) == view.queried_users
    assert len(view.read_target_users) <= round(0.1 * s.target_train.num_users)
    # the lists the attacker queried teach it the target's lists: fine-tuning beats pre-training
    assert agr["ptq"] > agr["ptd"] and agr["ptaq"] > agr["pta"]
    chance = 10 / s.num_items
    assert min(agr.values()) > 2 * chance


def test_mixing_defense_replaces_exactly_n_items_with_unseen_popular_ones(synthetic_split, trained_target):
    s = synthetic_split
    oracle = QueryOracle(trained_target, s.target_train, s.num_items)
    popularity = s.item_popularity()
    defended = MixingDefense(oracle, popularity, n_mix=4, seed=0, top=60)
    users = torch.arange(s.target_train.num_users)
    clean, mixed = oracle.query(users, 10), defended.query(users, 10)
    popular = set(np.argsort(-popularity, kind="stable")[:60].tolist())
    changed = clean != mixed
    usable = torch.tensor([len(popular - set(row) - set(np.flatnonzero(seen.numpy()).tolist()))
                           for row, seen in zip(clean.tolist(), oracle.interacted)])
    torch.testing.assert_close(changed.sum(1), usable.clamp(max=4))
    assert float((usable >= 4).float().mean()) > 0.9
    assert set(mixed[changed].tolist()) <= popular
    assert not bool(oracle.interacted.gather(1, mixed).any())
    assert all(len(set(row)) == 10 for row in mixed.tolist())
    assert torch.equal(MixingDefense(oracle, popularity, 0, seed=0).query(users, 10), clean)
    # a pool too small for some users: they get the usable popular items only, still distinct
    scarce = MixingDefense(oracle, popularity, n_mix=8, seed=0, top=8).query(users, 10)
    assert bool(((scarce != clean).sum(1) <= 8).all()) and all(len(set(row)) == 10 for row in scarce.tolist())
    assert not bool(oracle.interacted.gather(1, scarce).any())


def test_recommend_excludes_interacted_items():
    model = make_model("bpr", 3, 6, 4, torch.Generator().manual_seed(0))
    exclude = interaction_mask(Interactions.from_lists([[0, 1], [2], []]), 6)
    lists = recommend(model, torch.arange(3), exclude, 4)
    assert not bool(exclude.gather(1, lists).any()) and lists.shape == (3, 4)


def test_the_target_learns_its_users_test_items(synthetic_split, trained_target):
    s = synthetic_split
    oracle = QueryOracle(trained_target, s.target_train, s.num_items)
    lists = oracle.query(torch.arange(s.target_train.num_users), 10)
    chance = 10 / s.num_items
    assert recall(lists, interaction_mask(s.target_test, s.num_items)) > 2 * chance


@pytest.mark.parametrize("name", ["wrmf", "lightgcn"])
def test_implicit_victims_are_stealing_targets_and_reload_from_their_cache(synthetic_split, tmp_path, name):
    from experiments.stealing_cell import target_model

    s = synthetic_split
    model = target_model(s, name, 16, 3, 0, tmp_path / "target.pt")
    oracle = QueryOracle(model, s.target_train, s.num_items)
    lists = oracle.query(torch.arange(s.target_train.num_users), 10)
    assert not bool(oracle.interacted.gather(1, lists).any())
    assert recall(lists, interaction_mask(s.target_test, s.num_items)) > 2 * 10 / s.num_items
    reloaded = target_model(s, name, 16, 3, 0, tmp_path / "target.pt")  # graph rebuilt from the same data
    assert torch.equal(QueryOracle(reloaded, s.target_train, s.num_items).query(torch.arange(5), 10), lists[:5])


def test_logistic_objective_matches_a_hand_computation():
    objective = InteractionObjective(Interactions.from_lists([[1], [0]]), 4, "logistic", negatives=2)
    model = make_model("lmf", 2, 4, 3, torch.Generator().manual_seed(0))
    users, items, negatives = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([[2, 3], [3, 1]])

    def r(u: int, i: int) -> float:
        return model.score(torch.tensor([u]), torch.tensor([i])).item()

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    expected = (softplus(-r(0, 1)) + softplus(r(0, 2)) + softplus(r(0, 3))
                + softplus(-r(1, 0)) + softplus(r(1, 3)) + softplus(r(1, 1))) / 2
    assert objective.loss(model, (users, items, negatives)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_ml1m_bpr_acceptance_ordering(shared_datasets, tmp_path):
    """One seed of Table 4's ML-1M/BPR column at the paper's settings (about 7 minutes)."""
    from experiments.stealing_cell import run_cell

    params = {"dataset": "fed-ml", "data_dir": str(shared_datasets), "target": "bpr", "target_epochs": 60,
              "seed": 0, "attacker_fraction": 0.1, "n_mix": 0, "models_dir": str(tmp_path),
              "attacker": {k: v for k, v in StealingSettings().__dict__.items() if k != "seed"}}
    result = run_cell(params, tmp_path)
    agr = result["agr"]
    assert agr["ptaq"] >= agr["pta"] > agr["ptd"] and agr["ptq"] >= agr["ptd"] and agr["ptaq"] >= 0.5
    assert result["target_users_read"] == result["known_users"] == 302


def test_defense_figure_command_writes_tables_and_plot(tmp_path, capsys):
    from experiments.model_stealing import main

    assert main(["fig7-8", "--datasets", "synthetic", "--targets", "bpr", "--seeds", "0", "--mixes", "0", "5",
                 "--target-epochs", "2", "--clone-epochs", "2", "--aux-epochs", "2", "--finetune-epochs", "2",
                 "--out", str(tmp_path)]) == 0
    assert all((tmp_path / f"fig7-8.{ext}").is_file() for ext in ("csv", "md", "png"))
    rows = (tmp_path / "fig7-8.csv").read_text().splitlines()
    assert len(rows) == 3 and "PTAQ" in rows[0] and "| bpr | 5 |" in capsys.readouterr().out
    # PTD and PTA never query, so mixing cannot change them
    ptd = [row.split(",")[3] for row in rows[1:]]
    assert ptd[0] == ptd[1]


def test_command_line_rejects_bad_settings(capsys):
    from experiments.model_stealing import main

    assert main(["fig3", "--fractions", "0.1,0"]) == 2
    assert "--fraction and --fractions must be in (0, 1]" in capsys.readouterr().err
    assert main(["fig7-8", "--mixes", "60"]) == 2
    assert "--mixes in [0, --k]" in capsys.readouterr().err
    assert main(["fig6", "--clones", "bpr", "mlp"]) == 2
    assert capsys.readouterr().err.startswith("error: --clones: unknown mlp")
    with pytest.raises(ValueError, match="stealing losses"):
        StealingSettings(ranking_loss="mse")

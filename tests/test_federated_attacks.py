"""Malicious federated clients (A-ra, A-hum, EB, RA): threat model, crafted gradients, validation, diagnostics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.federated.a_hum import mine_hard_users
from clients.population import build_client_data
from clients.strategy import StrategyContext, load_strategy_class
from federation.checkpoints import committed_embeddings
from federation.config import ConfigError, SimulationConfig
from federation.plan import dataset_for, make_plan
from harness.runner import run
from recsys.models.ncf import ITEM_EMBEDDING, ncf_logits, weighted_bce_grads
from server.validation import validate_uploads
from tests.helpers import client_gradient, random_shard

ROOT = Path(__file__).resolve().parents[1]


def synthetic(tmp_path: Path, **overrides) -> SimulationConfig:
    settings = dict(dataset="synthetic", synthetic_users=300, synthetic_items=120, synthetic_items_per_user=20,
                    epochs=2, clients_per_round=64, lr=0.05, num_shards=2, out=str(tmp_path / "run"), seed=1)
    settings.update(overrides)
    return SimulationConfig(**settings)


def malicious_round(strategy: str, clients: int = 3, **config) -> tuple:
    """A shard of ``clients`` clients all driven by ``strategy``, one round, float64."""
    shard, theta = random_shard(num_users=clients, strategies=[strategy], config_overrides=config)
    uploads = shard.train_round(theta, np.arange(clients), round_index=4, targets=torch.tensor([5, 9]))
    return shard, theta, uploads


# ---- threat model ---------------------------------------------------------------------------------
def test_rho_decides_the_number_of_injected_clients_and_zero_injects_none(tmp_path):
    dataset = dataset_for(synthetic(tmp_path))
    for rho, expected in ((0.0, 0), (0.01, 3), (0.005, 1), (0.0033, 0)):
        plan = make_plan(synthetic(tmp_path, attack="a-ra", malicious_frac=rho), dataset)
        assert plan.num_benign == 300 and plan.num_clients == 300 + expected
        assert list(plan.malicious_ids) == list(range(300, 300 + expected))
        assert [a.spec for a in plan.assignments] == (["a-ra"] if expected else [])
    with pytest.raises(ConfigError, match="needs an attack"):
        synthetic(tmp_path, malicious_frac=0.01)


def test_fake_profiles_are_what_the_threat_model_says_and_benign_data_is_untouched(tmp_path):
    base = synthetic(tmp_path, targets=(3, 7), fake_profile_items=12)
    dataset = dataset_for(base)
    clean_plan = make_plan(base, dataset)
    clean = build_client_data(base, clean_plan, dataset, np.arange(300))
    for attack, check in (
        ("ra", lambda row: len(row) == 12 and {3, 7} <= set(row.tolist()) and len(set(row.tolist())) == 12),
        ("eb", lambda row: sorted(row.tolist()) == [3, 7]),
        ("eb-promote", lambda row: sorted(row.tolist()) == [3, 7]),
        ("a-ra", lambda row: len(row) == 0),
    ):
        config = synthetic(tmp_path, targets=(3, 7), fake_profile_items=12, attack=attack, malicious_frac=0.02)
        plan = make_plan(config, dataset)
        data = build_client_data(config, plan, dataset, np.arange(plan.num_clients))
        assert plan.num_clients == 306
        for client in plan.malicious_ids:
            assert check(data.train.user(client)), (attack, data.train.user(client))
            assert len(data.test.user(client)) == 0
        if attack == "ra":  # fillers are drawn per fake user
            assert len({tuple(data.train.user(c)) for c in plan.malicious_ids}) > 1
        benign = np.arange(300)
        np.testing.assert_array_equal(data.embeddings[benign], clean.embeddings)
        np.testing.assert_array_equal(data.negatives.subset(benign).items, clean.negatives.items)
        np.testing.assert_array_equal(data.train.subset(benign).items, clean.train.items)


# ---- crafted gradients --------------------------------------------------------------------------
def test_a_ra_upload_is_the_gradient_of_eq_7_computed_by_autograd():
    shard, theta, uploads = malicious_round("a-ra", clients=3, approx_users=4, approx_sigma=0.5)
    ctx = StrategyContext(shard.spec, shard.lr, torch.tensor([5, 9]), 4, shard.config)
    targets = torch.tensor([5, 9])
    for position, client in enumerate(uploads.client_ids):  # each client replays its own draws
        p_hat = torch.randn((4, 8), generator=ctx.client_generator(client), dtype=torch.float64) * 0.5
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        logits = ncf_logits(p_hat.repeat_interleave(2, dim=0), leaves[ITEM_EMBEDDING][targets.repeat(4)], leaves,
                            shard.spec.num_linear)
        loss = -torch.nn.functional.logsigmoid(logits).sum() / 4  # (1/n) Σ_i Σ_j −log Υ(p̂_j, q_i)
        loss.backward()
        upload = client_gradient(uploads, position, shard.spec.num_items)
        for name in theta:
            torch.testing.assert_close(upload[name], leaves[name].grad, msg=name)
        assert float(uploads.losses[position]) == pytest.approx(loss.item())
    assert sorted(uploads.row_items.tolist()) == [5, 5, 5, 9, 9, 9]  # only the target rows are touched


def test_attack_draws_are_keyed_per_client_not_per_batch():
    """A client's A-ra/A-hum upload is the same whichever clients share its batch (shards change batches)."""
    for strategy in ("a-ra", "a-hum"):
        shard, theta = random_shard(num_users=4, strategies=[strategy])
        together = shard.train_round(theta, np.arange(4), round_index=2, targets=torch.tensor([5]))
        alone = shard.train_round(theta, np.array([2]), round_index=2, targets=torch.tensor([5]))
        for name, value in client_gradient(alone, 0, 40).items():
            torch.testing.assert_close(client_gradient(together, 2, 40)[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("attack", ["a-ra", "a-hum"])
def test_one_two_and_four_shards_give_identical_metrics_under_attack(tmp_path, attack):
    """Attack draws are keyed per client and the server adds uploads in client-id order, so the shard layout
    changes nothing but the float rounding of adding the shards' evaluation sums (~1e-8 relative)."""
    runs = [run(synthetic(tmp_path, out=str(tmp_path / f"s{n}"), num_shards=n, attack=attack, malicious_frac=0.03),
                echo=False) for n in (1, 2, 4)]
    for other in runs[1:]:
        for a, b in zip(runs[0][1:], other[1:]):
            for key in a:
                if key.startswith(("target/", "train/")):
                    assert a[key] == b[key], key
                elif key.startswith("test/"):
                    assert a[key] == pytest.approx(b[key], rel=1e-6), key


def test_attack_scale_multiplies_every_malicious_upload():
    for strategy in ("a-ra", "a-hum", "eb", "eb-promote", "ra"):
        _, _, one = malicious_round(strategy, attack_scale=1.0)
        _, _, three = malicious_round(strategy, attack_scale=3.0)
        for name, grad in one.dense.items():
            torch.testing.assert_close(three.dense[name], 3 * grad, msg=f"{strategy} {name}")
        torch.testing.assert_close(three.row_values, 3 * one.row_values)
        torch.testing.assert_close(three.squared_norms(), 9 * one.squared_norms())


def test_a_hum_mined_vectors_score_the_target_lower_than_their_initialisation():
    _, theta = random_shard(num_items=40)
    target = torch.full((50,), 7)
    initial = torch.randn((50, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.01
    mined = mine_hard_users(theta, initial, target, step=0.001, iterations=30, num_linear=3)
    before = torch.sigmoid(ncf_logits(initial, theta[ITEM_EMBEDDING][target], theta, 3))
    after = torch.sigmoid(ncf_logits(mined, theta[ITEM_EMBEDDING][target], theta, 3))
    assert torch.all(after < before)
    # More mining (larger ξ) moves further towards hard users.
    deeper = mine_hard_users(theta, initial, target, step=0.01, iterations=30, num_linear=3)
    assert torch.all(torch.sigmoid(ncf_logits(deeper, theta[ITEM_EMBEDDING][target], theta, 3)) < after)


def test_eb_trains_like_a_benign_client_on_the_targets_as_in_the_papers_code():
    """EB = honest BCE over its positives (the targets, via fake_profiles) and its r sampled negatives."""
    shard, theta, uploads = malicious_round("eb", clients=2)
    honest, _ = random_shard(num_users=2)
    expected = honest.train_round(theta, np.arange(2), round_index=4, targets=torch.tensor([5, 9]))
    for name, value in expected.dense.items():
        torch.testing.assert_close(uploads.dense[name], value, msg=name)
    torch.testing.assert_close(uploads.row_values, expected.row_values)
    assert uploads.row_items.tolist() == expected.row_items.tolist()


def test_eb_promote_promotes_only_the_positives_with_the_clients_own_embedding():
    shard, theta, uploads = malicious_round("eb-promote", clients=2)
    batch = shard.batch(np.arange(2))
    keep = batch.labels == 1
    owner, items = batch.owner[keep], batch.items[keep]
    counts = torch.bincount(owner, minlength=2).to(theta[ITEM_EMBEDDING].dtype)
    _, grads, _ = weighted_bce_grads(theta, random_shard(num_users=2)[0].embeddings, owner, items,
                                     torch.ones(len(items), dtype=counts.dtype), 1 / counts[owner], 3)
    summed = uploads.summed(shard.spec.num_items)
    for name in theta:
        torch.testing.assert_close(summed[name], grads[name], msg=name)


@pytest.mark.parametrize("strategy", ["a-ra", "a-hum", "eb", "eb-promote", "ra"])
def test_malicious_uploads_pass_the_servers_validation(strategy):
    shard, _, uploads = malicious_round(strategy)
    record = uploads.scaled(1.0).to("cpu")
    record = type(record)(record.client_ids, {k: v.float() for k, v in record.dense.items()}, record.row_indptr,
                          record.row_items, record.row_values.float(), record.losses.float()).to_record()
    valid, rejected = validate_uploads(record, shard.spec, np.arange(3))
    assert valid.num_clients == 3 and rejected == []
    assert bool((valid.squared_norms() > 0).all())


# ---- end to end ---------------------------------------------------------------------------------------
def mean_target_score(out: Path, config: SimulationConfig) -> float:
    """Mean Υ(p_u, q_target) over benign users, from the run's checkpoints."""
    theta = torch.load(out / "checkpoint.pt", weights_only=False)["theta"]
    embeddings = committed_embeddings(out)[:config.synthetic_users]
    target = json.loads((out / "config.json").read_text())["resolved"]["targets"][0]
    items = torch.full((len(embeddings),), target)
    return float(torch.sigmoid(ncf_logits(embeddings, theta[ITEM_EMBEDDING][items], theta, 3)).mean())


def test_a_ra_raises_the_targets_mean_score_and_the_server_measures_every_upload(tmp_path):
    clean = synthetic(tmp_path, out=str(tmp_path / "clean"))
    attacked = synthetic(tmp_path, out=str(tmp_path / "attacked"), attack="a-ra", malicious_frac=0.02)
    run(clean, echo=False)
    history = run(attacked, echo=False)
    assert mean_target_score(tmp_path / "attacked", attacked) > mean_target_score(tmp_path / "clean", clean) + 0.05
    assert history[-1]["rejected_uploads"] == 0
    assert history[-1]["uploads/malicious_norm_mean"] > 0 and history[-1]["uploads/benign_norm_mean"] > 0
    assert history[0]["uploads/malicious_norm_mean"] is None  # epoch 0: nothing uploaded yet
    rounds = [json.loads(line) for line in (tmp_path / "attacked" / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 2 * 5  # 306 clients, 64 per round
    with_attackers = [r for r in rounds if r["uploads/malicious_clients"]]
    assert sum(r["uploads/malicious_clients"] for r in rounds) == 2 * 6  # every malicious client, once per epoch
    assert sum(r["uploads/benign_clients"] for r in rounds) == 2 * 300
    assert all(r["uploads/malicious_norm_max"] >= r["uploads/malicious_norm_mean"] > 0 for r in with_attackers)
    assert sum(r["target_rows/malicious_uploaders"] for r in rounds) == 2 * 6  # A-ra touches the one target row
    resolved = json.loads((tmp_path / "attacked" / "config.json").read_text())["resolved"]
    assert resolved["benign_clients"] == 300 and resolved["malicious_clients"] == list(range(300, 306))


PLUGIN = '''
import numpy as np
from attacks.federated.base import MaliciousStrategy, approximated_users, promotion_upload
from clients.strategy import WeightedBCE
import torch


class PushEverySecondItem(MaliciousStrategy):
    """A user-defined attack: promote the targets for approximated users and remember even items."""

    @classmethod
    def fake_profiles(cls, num_clients, targets, num_items, config, rng):
        return [np.arange(0, num_items, 2) for _ in range(num_clients)]

    def craft(self, theta, batch, ctx):
        rows = approximated_users(batch, 1, ctx)
        owner = torch.arange(len(rows)).repeat_interleave(len(ctx.targets))
        items = ctx.targets.repeat(len(rows))
        ones = torch.ones(len(items), dtype=rows.dtype)
        return promotion_upload(theta, WeightedBCE(rows, owner, items, ones, ones, torch.arange(len(rows))), batch, ctx)
'''


def test_a_malicious_plugin_from_a_file_runs_through_simulate_py(tmp_path):
    plugin = tmp_path / "my_attack.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "cli"
    command = [sys.executable, str(ROOT / "simulate.py"), "--dataset", "synthetic", "--synthetic-users", "200",
               "--synthetic-items", "80", "--epochs", "1", "--out", str(out), "--shards", "1",
               "--attack", f"{plugin}:PushEverySecondItem", "--malicious-frac", "0.05", "--attack-scale", "20"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["attack"].endswith("my_attack.py:PushEverySecondItem")
    assert config["resolved"]["malicious_clients"] == list(range(200, 210))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["rejected_uploads"] == 0 and rows[-1]["uploads/malicious_norm_mean"] > 0
    assert load_strategy_class(config["attack"]).benign is False


@pytest.mark.parametrize("attack", ["random", "bandwagon", "targets-only", "revadv", "rapu+sharpap", "dada"])
def test_profile_clients_train_on_exactly_the_profiles_the_central_attack_injects(tmp_path, attack):
    """``--attack profile:NAME``: the injected clients' local data are the ``attacks.implicit`` profiles for the
    same training lists, targets, count, budget, seed and preset, and they train like benign clients (negatives
    too)."""
    from attacks.implicit import PRESETS, PoisonSetting, generate

    config = synthetic(tmp_path, targets=(3, 7), fake_profile_items=12, attack=f"profile:{attack}", malicious_frac=0.02,
                       profile_preset="ci")
    dataset = dataset_for(config)
    plan = make_plan(config, dataset)
    data = build_client_data(config, plan, dataset, np.arange(plan.num_clients))
    central = generate(attack, PoisonSetting(dataset.train, dataset.num_items, np.array([3, 7]), 6, 12),
                       PRESETS["ci"], config.seed)[0].lists
    for f, client in enumerate(plan.malicious_ids):
        np.testing.assert_array_equal(data.train.user(client), central.user(f))
        assert len(data.negatives.user(client)) == config.negatives * len(central.user(f))
    assert load_strategy_class(f"profile:{attack}").benign is False


def test_every_implicit_attack_has_a_profile_client_and_each_resolves():
    from attacks.implicit import ATTACKS
    from federation.plugins import MALICIOUS_STRATEGIES

    names = [name for name in MALICIOUS_STRATEGIES if name.startswith("profile:")]
    assert sorted(names) == sorted(f"profile:{attack}" for attack in ATTACKS)
    for name in names:
        assert load_strategy_class(name).attack == name.removeprefix("profile:")


def test_profile_presets_are_named_where_configs_are_checked():
    from attacks.implicit import PRESETS
    from federation.plugins import PROFILE_ATTACK_PRESETS

    assert PROFILE_ATTACK_PRESETS == tuple(PRESETS)
    with pytest.raises(ConfigError, match="profile_preset must be one of paper, lean, ci"):
        SimulationConfig(profile_preset="fast")

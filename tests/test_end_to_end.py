"""End-to-end runs through the Flower ServerApp/ClientApp on synthetic data."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from federation.config import ConfigError, SimulationConfig
from harness.runner import run

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path, **overrides) -> SimulationConfig:
    settings = dict(dataset="synthetic", synthetic_users=400, synthetic_items=150, synthetic_items_per_user=25,
                    epochs=4, clients_per_round=64, lr=0.05, num_shards=2, out=str(tmp_path / "run"), seed=3)
    settings.update(overrides)
    return SimulationConfig(**settings)


def test_training_raises_test_hr_and_writes_the_run_folder(tmp_path):
    history = run(small(tmp_path), echo=False)
    assert [row["epoch"] for row in history] == [0, 1, 2, 3, 4]
    assert history[-1]["test/hr@20"] > history[0]["test/hr@20"] + 0.02
    assert history[-1]["train/loss"] < history[1]["train/loss"]
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == history
    expected = {"epoch", "test/hr@20", "test/precision@20", "test/ndcg@20", "target/er@5", "target/er@10",
                "target/er@20", "target/er@30", "train/loss", "rejected_uploads", "seconds"}
    assert expected <= set(rows[0])
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(header) == {key for row in rows for key in row}
    assert (out / "metrics.png").stat().st_size > 10_000
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["resolved"]["shards"] == 2 and len(config["resolved"]["targets"]) == 1


def test_same_seed_same_numbers_and_sharding_does_not_change_the_math(tmp_path):
    first = run(small(tmp_path, epochs=2, out=str(tmp_path / "a")), echo=False)
    again = run(small(tmp_path, epochs=2, out=str(tmp_path / "b")), echo=False)
    central = run(small(tmp_path, epochs=2, out=str(tmp_path / "c"), mode="central"), echo=False)
    keys = [k for k in first[0] if k.startswith(("test/", "target/", "train/"))]
    strip = lambda h: [[row[k] for k in keys] for row in h[1:]]  # noqa: E731 (epoch 0 has no loss)
    assert strip(first) == strip(again)
    np.testing.assert_allclose(np.array(strip(central), dtype=float), np.array(strip(first), dtype=float), rtol=1e-4)
    assert json.loads((tmp_path / "c" / "config.json").read_text())["resolved"]["shards"] == 1


def test_resume_continues_exactly(tmp_path):
    full = run(small(tmp_path, epochs=3, out=str(tmp_path / "full")), echo=False)
    run(small(tmp_path, epochs=2, out=str(tmp_path / "part")), echo=False)
    resumed = run(small(tmp_path, epochs=3, out=str(tmp_path / "part"), resume=True), echo=False)
    assert len(resumed) == 4
    for a, b in zip(full, resumed):
        for key in a:
            if key.startswith(("test/", "target/", "train/")) and a["epoch"] > 0:
                assert a[key] == pytest.approx(b[key], rel=1e-6), key
    with pytest.raises(ConfigError, match=r"\['lr'\] differ"):
        run(small(tmp_path, epochs=4, out=str(tmp_path / "part"), resume=True, lr=0.1), echo=False)
    theta_a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)["theta"]
    theta_b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)["theta"]
    for name in theta_a:
        torch.testing.assert_close(theta_a[name], theta_b[name])


PLUGIN = '''
import torch
from clients.strategy import ClientStrategy, ClientUpdate, bce_step


class Frozen(ClientStrategy):
    """Trains locally but uploads zero gradients (a free-rider)."""

    def train(self, theta, batch, ctx):
        update = bce_step(theta, batch, ctx)
        return ClientUpdate(update.uploads.scaled(0.0), update.embeddings)
'''


def test_simulate_cli_runs_a_plugin_strategy_from_a_file(tmp_path):
    plugin = tmp_path / "my_strategy.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "cli"
    command = [sys.executable, str(ROOT / "simulate.py"), "--dataset", "synthetic", "--synthetic-users", "200",
               "--synthetic-items", "80", "--epochs", "1", "--seed", "5", "--out", str(out), "--shards", "1",
               "--client-strategy", f"{plugin}:Frozen"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test/hr@20" in result.stdout  # the summary table
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    theta = torch.load(out / "checkpoint.pt", weights_only=False)["theta"]
    initial = __import__("recsys.models.ncf", fromlist=["init_theta"]).init_theta(
        SimulationConfig(synthetic_items=80).model_spec(80), torch.Generator().manual_seed(5))
    for name in theta:  # every client uploads zeros: Θ never moves
        torch.testing.assert_close(theta[name], initial[name])
    assert rows[-1]["train/loss"] > 0


def test_bad_settings_fail_with_a_clear_message(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "simulate.py"), "--dataset", "synthetic", "--lr", "-1",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "lr must be > 0" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "simulate.py"), "--client-strategy", "nope.mod:X",
                             "--epochs", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "cannot import client strategy module 'nope.mod'" in result.stderr


def test_sequential_runs_in_one_process_keep_no_shards(tmp_path):
    """The client app caches a run's shards while it runs and drops them when it ends: a sweep of runs in one
    process does not accumulate them."""
    from clients import app

    for name in ("first", "second", "third"):
        run(small(tmp_path, epochs=1, out=str(tmp_path / name)), echo=False)
        assert app.cached_shards() == 0

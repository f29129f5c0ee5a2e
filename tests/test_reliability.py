"""Checkpoints are one consistent unit: a run interrupted anywhere (SIGINT or SIGKILL) resumes to the same
numbers; refused resumes and refused runs change nothing in the run folder."""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clients.strategy import ClientStrategy, HonestStrategy
from federation.checkpoints import CheckpointError, shard_file
from federation.config import ConfigError, SimulationConfig
from harness.runner import run
from server.loop import FAULT_ENV

ROOT = Path(__file__).resolve().parents[1]
# 120 clients, 40 per round: 3 rounds per epoch (global round indices 0-2, 3-5, 6-8), 2 shards
ARGS = ["--dataset", "synthetic", "--synthetic-users", "120", "--synthetic-items", "60", "--synthetic-items-per-user",
        "10", "--clients-per-round", "40", "--epochs", "3", "--shards", "2", "--lr", "0.05", "--seed", "4", "--quiet"]
# (signal, point) in the order they are reached; each resumes the previous interruption
CHAIN = [("SIGINT", "committed:0"), ("SIGKILL", "round:0"), ("SIGINT", "round:2"), ("SIGKILL", "evaluated:1"),
         ("SIGINT", "reported:1"), ("SIGKILL", "committed:1"), ("SIGINT", "round:4"), ("SIGKILL", "evaluated:2"),
         ("SIGINT", "reported:2"), ("SIGKILL", "committed:2")]
TIMING = ("seconds", "eval_seconds")


def _simulate(argv: list[str], fault: str) -> None:
    """Child process body: ``simulate.py`` with the fault hook set (forked: no second import of torch and flwr).
    The parent's objects are frozen out of the child's garbage collector: finalising one here (e.g. a Ray client
    left by an earlier test) would join threads that only exist in the parent."""
    gc.freeze()
    os.environ.pop(FAULT_ENV, None)
    if fault:
        os.environ[FAULT_ENV] = fault
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import simulate

    code = simulate.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def simulate_in_child(argv: list[str], fault: str = "") -> int:
    child = multiprocessing.get_context("fork").Process(target=_simulate, args=(argv, fault))
    child.start()
    child.join(300)
    return child.exitcode


def outcome(out: Path) -> dict:
    """Everything a run leaves that must not depend on interruptions (timings excluded)."""
    rows = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    metrics = [{k: v for k, v in row.items() if k not in TIMING} for row in rows("metrics.jsonl")]
    theta = torch.load(out / "checkpoint.pt", weights_only=False)["theta"]
    return {"metrics": metrics, "rounds": rows("rounds.jsonl"), "rejections": rows("rejections.jsonl"),
            "theta": {k: v.tolist() for k, v in theta.items()}}


def test_interrupted_anywhere_resumes_to_the_same_numbers(tmp_path, capfd):
    """Ten interruptions (SIGINT and SIGKILL, mid-epoch, between the shards' files and the commit, between the
    commit and the cleanup), each resumed with ``--resume``: the final run folder equals an uninterrupted run's."""
    assert simulate_in_child([*ARGS, "--out", str(tmp_path / "full")]) == 0
    out = str(tmp_path / "chain")
    for step, (name, point) in enumerate(CHAIN):
        code = simulate_in_child([*ARGS, "--out", out, *(["--resume"] if step else [])], f"{name}:{point}")
        assert code == (130 if name == "SIGINT" else -signal.SIGKILL), (name, point, code)
        if name == "SIGINT":
            err = capfd.readouterr().err
            assert err.strip().splitlines()[-1] == "interrupted; resume with --resume" and "Traceback" not in err
    assert simulate_in_child([*ARGS, "--out", out, "--resume"]) == 0
    assert outcome(Path(out)) == outcome(tmp_path / "full")
    assert sorted(p.name for p in (Path(out) / "checkpoints").iterdir()) == ["epoch-3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point", ["committed:0", "round:1", "round:3", "evaluated:1", "reported:1", "committed:1",
                                   "round:5", "evaluated:2", "reported:2", "committed:2", "round:7", "evaluated:3"])
def test_each_interruption_of_a_real_process_resumes_exactly(tmp_path, name, point):
    """One fresh ``python simulate.py`` per point and signal, resumed once."""
    command = [sys.executable, str(ROOT / "simulate.py"), *ARGS]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full = subprocess.run([*command, "--out", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    cut = subprocess.run([*command, "--out", str(tmp_path / "cut")], env={**env, FAULT_ENV: f"{name}:{point}"},
                         capture_output=True, text=True)
    assert cut.returncode == (130 if name == "SIGINT" else -signal.SIGKILL), cut.stderr
    if name == "SIGINT":
        assert cut.stderr.strip() == "interrupted; resume with --resume"
    done = subprocess.run([*command, "--out", str(tmp_path / "cut"), "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert outcome(tmp_path / "cut") == outcome(tmp_path / "full")


# ---- in-process checks on the same small run ----------------------------------------------------------------
def small(out: Path, **overrides) -> SimulationConfig:
    settings = dict(dataset="synthetic", synthetic_users=120, synthetic_items=60, synthetic_items_per_user=10,
                    clients_per_round=40, epochs=3, num_shards=2, lr=0.05, seed=4, out=str(out))
    return SimulationConfig(**{**settings, **overrides})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_onto_another_shard_count_reshards_the_client_states(tmp_path):
    full = run(small(tmp_path / "full", epochs=2), echo=False)
    run(small(tmp_path / "part", epochs=1, num_shards=3), echo=False)
    resumed = run(small(tmp_path / "part", epochs=2, num_shards=2, resume=True), echo=False)
    more = run(small(tmp_path / "part", epochs=3, num_shards=1, resume=True), echo=False)
    # another shard count changes only float rounding: compare the continuous metrics (HR and ER count hits)
    keys = ["train/loss", "test/ndcg@20"]
    assert len(resumed) == len(full) == 3
    for a, b in zip(full[1:], resumed[1:]):  # epoch 0 has no loss
        assert [b[k] for k in keys] == pytest.approx([a[k] for k in keys], rel=1e-4), a["epoch"]
    assert len(more) == 4 and [row["epoch"] for row in more] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "part" / "config.json").read_text())["resolved"]["shards"] == 1


def test_a_refused_resume_changes_nothing_in_the_run_folder(tmp_path):
    out = tmp_path / "run"
    run(small(out, epochs=2), echo=False)
    before = snapshot(out)
    refusals = [
        (dict(lr=0.1), r"\['lr'\] differ"),
        (dict(epochs=1), "--epochs 1 is below the checkpointed epoch 2"),
        (dict(overwrite=True), "exclude each other"),
    ]
    for overrides, message in refusals:
        with pytest.raises(ConfigError, match=message):
            run(small(out, resume=True, **overrides), echo=False)
        assert snapshot(out) == before
    shard_file(out, 2, 1).unlink()
    before = snapshot(out)
    with pytest.raises(CheckpointError, match="epoch-2/shard-1.pt is missing"):
        run(small(out, resume=True), echo=False)
    assert snapshot(out) == before
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        run(small(tmp_path / "elsewhere", resume=True), echo=False)


def test_a_new_run_into_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    first = run(small(out, epochs=2), echo=False)
    before = snapshot(out)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume to continue it or --overwrite"):
        run(small(out, epochs=1, seed=5), echo=False)
    assert snapshot(out) == before
    second = run(small(out, epochs=1, seed=5, overwrite=True), echo=False)
    assert len(second) == 2 and second[1]["test/hr@20"] != first[1]["test/hr@20"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]


def test_zero_epochs_evaluates_the_initial_model_and_prints_the_summary(tmp_path, capsys):
    import simulate

    argv = ["--synthetic-users", "120", "--synthetic-items", "60", "--epochs", "0", "--shards", "1",
            "--out", str(tmp_path / "run")]
    assert simulate.main(argv) == 0
    out = capsys.readouterr().out
    assert "test/hr@20" in out and "n/a" in out  # summary table; no training, no loss
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_an_attack_without_attackers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"floor\(120 x 0\) = 0 malicious clients"):
        run(small(tmp_path / "a", attack="a-ra"), echo=False)
    with pytest.raises(ConfigError, match=r"floor\(120 x 0.005\) = 0 malicious clients"):
        run(small(tmp_path / "b", attack="a-ra", malicious_frac=0.005), echo=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


class AllNaN(ClientStrategy):
    """Every upload is NaN: every client is rejected at the server."""

    def train(self, theta, batch, ctx):
        update = HonestStrategy().train(theta, batch, ctx)
        for value in update.uploads.dense.values():
            value.fill_(float("nan"))
        return update


@pytest.mark.parametrize("strategy,extra,message", [
    ("tests.test_reliability:AllNaN", [], "round 0: 40 of 40 uploads were rejected"),
    ("tests.test_validation:CrashingStrategy", [], "round 0: 40 of 40 uploads were rejected"),
    ("tests.test_validation:NaNForSomeClients", ["--max-rejected", "0.3"], "or more than --max-rejected 0.3 of them"),
])
def test_too_many_rejected_uploads_fail_the_run_with_one_line(tmp_path, capsys, strategy, extra, message):
    import simulate

    out = tmp_path / "run"
    argv = ["--synthetic-users", "120", "--synthetic-items", "60", "--clients-per-round", "40", "--epochs", "1",
            "--shards", "1", "--out", str(out), "--quiet", "--client-strategy", strategy,
            *extra]
    assert simulate.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert (out / "rejections.jsonl").read_text().count("\n") >= 12

"""One command-line convention: lists by commas or spaces, $FEDREC_DATA_DIR, one-line errors with exit 2; and the
one atomic-write helper."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import simulate
from experiments import federated_defenses, federated_poisoning, model_stealing, sharpap, tcd
from harness.cli import CommandParser, add_common, parse
from recsys.atomic import atomic_path, atomic_write_text


def parser() -> CommandParser:
    p = CommandParser(prog="demo")
    add_common(p, out="runs/demo", datasets=["fed-ml"])
    return p


@pytest.mark.parametrize("argv", [["--seeds", "0,1,2"], ["--seeds", "0", "1", "2"], ["--seeds", "0,", "1", "2"],
                                  ["--seeds", "0", "1,2"]])
def test_seeds_accept_commas_spaces_or_both(argv):
    assert parse(parser(), argv).seeds == [0, 1, 2]


def test_datasets_defaults_and_data_dir_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path))
    args = parse(parser(), ["--datasets", "fed-ml", "fed-az"])
    assert args.datasets == ["fed-ml", "fed-az"] and args.data_dir == str(tmp_path.resolve())
    assert args.seeds == [0, 1, 2] and args.workers == 1 and args.out == "runs/demo"
    assert parse(parser(), ["--data-dir", "."]).data_dir == str(Path(".").resolve())
    monkeypatch.delenv("FEDREC_DATA_DIR")
    assert parse(parser(), []).data_dir == "" and parse(parser(), []).datasets == ["fed-ml"]


@pytest.mark.parametrize("main,argv,message", [
    (federated_poisoning.main, ["figure1", "--seeds", "0", "x"], "--seeds expects comma-separated integers"),
    (federated_poisoning.main, ["figure9"], "argument figures: invalid choice: 'figure9'"),
    (federated_defenses.main, ["matrix", "--rho", "0.1,a"], "--rho expects comma-separated numbers"),
    (federated_defenses.main, ["matrix", "--workers", "0"], "--workers must be >= 1"),
    (simulate.main, ["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (simulate.main, ["--max-rejected", "2"], "max_rejected must be a share in [0, 1]"),
])
def test_bad_options_fail_with_one_line_and_exit_2(capsys, main, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize("main,argv", [
    (federated_poisoning.main, ["figure1", "--datasets", "fed-ml", "--seeds", "0", "--epochs", "1"]),
    (federated_defenses.main, ["calibrate", "--datasets", "fed-az", "--seeds", "0", "--epochs", "1"]),
])
def test_experiments_read_fedrec_data_dir_and_report_missing_data_in_one_line(tmp_path, monkeypatch, capsys,
                                                                               main, argv):
    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path / "datasets"))
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"missing {tmp_path / 'datasets'}" in err
    assert not (tmp_path / "out" / "cells").exists() or not any((tmp_path / "out" / "cells").iterdir())


# (command, its first arguments, a list option with two values, a dataset not in an empty folder); SharpAP counts
# --runs instead of listing seeds, so its list option is --victims.
CENTRAL = [
    (sharpap, ["table"], "--victims", ["wrmf", "bpr"], "fed-ml"),
    (model_stealing, ["table4"], "--seeds", ["0", "1"], "fed-ml"),
    (tcd, ["table3"], "--seeds", ["0", "1"], "filmtrust"),
]


@pytest.mark.parametrize("command,first,option,values,dataset", CENTRAL)
def test_central_commands_share_the_convention(tmp_path, monkeypatch, capsys, command, first, option, values,
                                               dataset):
    monkeypatch.delenv("FEDREC_DATA_DIR", raising=False)
    by_commas = parse(command.build_parser(), [*first, option, ",".join(values)])
    by_spaces = parse(command.build_parser(), [*first, option, *values])
    assert vars(by_commas) == vars(by_spaces) and by_commas.data_dir == ""
    assert [str(v) for v in getattr(by_spaces, option[2:])] == values

    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [*first, "--datasets", dataset, "--out", str(tmp_path / "out")]
    assert command.main([*argv, "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"{empty}{os.sep}" in err

    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path / "env"))
    assert parse(command.build_parser(), first).data_dir == str((tmp_path / "env").resolve())
    assert command.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"{tmp_path / 'env'}{os.sep}" in err
    assert not (tmp_path / "out" / "cells").exists()


def test_atomic_writes_are_all_or_nothing_and_safe_for_concurrent_writers(tmp_path):
    path = tmp_path / "cache.json"
    texts = [f"writer {i}\n" * 2000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(path, text)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_text() in texts and [p.name for p in tmp_path.iterdir()] == ["cache.json"]
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt
    assert path.read_text() in texts and [p.name for p in tmp_path.iterdir()] == ["cache.json"]


SMALL = ["--synthetic-users", "120", "--synthetic-items", "60", "--clients-per-round", "40", "--shards", "1", "--quiet"]


@pytest.mark.parametrize("strategy,message", [
    ("tests.test_validation:Nope", "has no attribute 'Nope'"),
    ("honest@0-5000", "are out of range: the population has clients"),
])
def test_bad_plugins_fail_before_the_run_in_one_line(tmp_path, capsys, strategy, message):
    assert simulate.main([*SMALL, "--client-strategy", strategy, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and len(err) < 300
    assert not (tmp_path / "run").exists()


def test_the_readme_strategy_example_runs(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b.split("```")[0] for b in readme.split("```python")[1:] if "class ScaledUpload" in b)
    (tmp_path / "my_strategies.py").write_text(block)
    argv = [*SMALL, "--epochs", "1", "--client-strategy", f"{tmp_path / 'my_strategies.py'}:ScaledUpload@0-9,42",
            "--out", str(tmp_path / "run")]
    assert simulate.main(argv) == 0


def test_train_loss_counts_benign_clients_only_and_reads_n_a_without_uploads():
    import numpy as np
    import torch

    from federation.uploads import ClientUploads
    from harness.reporting import epoch_line
    from recsys.models.ncf import NCFSpec
    from server.loop import EpochStats

    spec = NCFSpec(num_items=10)
    dense = {name: torch.zeros((2, *shape)) for name, shape in spec.shapes().items() if name != "item_emb"}
    uploads = ClientUploads(np.array([3, 4]), dense, torch.tensor([0, 1, 2]), torch.tensor([1, 2]),
                            torch.zeros((2, 8)), torch.tensor([0.5, 100.0]))
    stats = EpochStats()
    stats.add_round(uploads, np.array([False, True]), torch.tensor([2]), {}, 0)
    assert stats.summary(1)["train/loss"] == 0.5
    empty = EpochStats().summary(1)
    assert empty["train/loss"] is None
    row = {"epoch": 1, **empty, "test/hr@20": 0.1, "test/ndcg@20": 0.1, "seconds": 0.0, "eval_seconds": 0.0}
    assert "loss    n/a" in epoch_line(row, 20)

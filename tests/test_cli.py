"""One command-line convention: lists by commas or spaces, $FEDREC_DATA_DIR, one-line errors with exit 2; and the
one atomic-write helper."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import simulate
from experiments import federated_defenses, federated_poisoning
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

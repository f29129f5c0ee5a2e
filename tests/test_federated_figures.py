"""The figure commands of the federated poisoning paper, on a small synthetic grid."""

from __future__ import annotations

import csv

from experiments import federated_poisoning as fp


def test_a_figure_command_writes_its_csv_png_and_summary_and_reuses_cells(tmp_path, monkeypatch, capsys):
    settings = (fp.Setting("synthetic", "none", 0.0), fp.Setting("synthetic", "a-ra", 0.02))
    monkeypatch.setitem(fp.FIGURES, "figure1", fp.Figure("tiny", settings, rows="dataset", lines="attack"))
    argv = ["figure1", "--seeds", "0,1", "--epochs", "2", "--out", str(tmp_path)]
    assert fp.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "figure1.csv").open()))
    assert {r["attack"] for r in rows} == {"none", "a-ra"} and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["epoch"] for r in rows} == {"0", "1", "2"}
    assert {"target/er@5", "target/er@30", "test/hr@20"} <= {r["metric"] for r in rows}
    summary = list(csv.DictReader((tmp_path / "figure1-summary.csv").open()))
    assert [r["attack"] for r in summary] == ["none", "a-ra"] and summary[0]["seeds"] == "2"
    assert (tmp_path / "figure1.png").stat().st_size > 20_000
    assert "| dataset | attack |" in capsys.readouterr().out
    cells = sorted(p.name for p in (tmp_path / "cells").glob("*.json"))
    assert cells == ["synthetic-a-ra-rho0.02-seed0.json", "synthetic-a-ra-rho0.02-seed1.json",
                     "synthetic-none-seed0.json", "synthetic-none-seed1.json"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    assert fp.main(argv) == 0  # second call: every run comes from the cache
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}


def test_bad_seeds_fail_with_a_clear_message(capsys):
    assert fp.main(["figure2", "--seeds", "a,b"]) == 2
    assert "--seeds expects comma-separated integers" in capsys.readouterr().err


def test_datasets_and_attacks_options_restrict_a_figure_and_reject_an_empty_one(capsys):
    assert [s.dataset for s in fp.restrict(fp.FIGURES["figure1"], {"fed-az"}, set()).settings] == ["fed-az"] * 5
    kept = fp.restrict(fp.FIGURES["figure1"], set(), {"none", "eb"}).settings
    assert [(s.dataset, s.attack, s.rho) for s in kept] == [("fed-ml", "none", 0.0), ("fed-ml", "eb", 0.005),
                                                            ("fed-az", "none", 0.0), ("fed-az", "eb", 0.001)]
    assert fp.main(["figure2", "--datasets", "fed-az"]) == 2
    assert "leaves a figure without settings" in capsys.readouterr().err
    assert fp.main(["figure1", "--attacks", "eb,bogus"]) == 2
    assert "--attacks: unknown bogus" in capsys.readouterr().err

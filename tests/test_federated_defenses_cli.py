"""The attack × defense command runs end to end on synthetic data: calibration, cached cells, table and heatmap."""

import json

import pytest

from experiments.federated_defenses import main


def test_calibrate_then_matrix_on_synthetic(tmp_path, capsys):
    common = ["--datasets", "synthetic", "--epochs", "2", "--seeds", "0", "--lr", "0.05", "--out", str(tmp_path)]
    assert main(["calibrate", *common]) == 0
    bounds = json.loads((tmp_path / "calibration-synthetic.json").read_text())["bounds (q90)"]
    assert 0 < bounds["clip_row"] < bounds["clip_upload"]  # one item row is a part of a whole upload
    args = ["matrix", *common, "--attacks", "none,a-ra", "--rho", "0.05", "--defenses", "sum,median,norm-bound",
            "--calibrated"]
    assert main(args) == 0
    table = (tmp_path / "matrix-lr0p05-r4.md").read_text()
    assert "popularity HR@20: synthetic" in table and (tmp_path / "matrix-lr0p05-r4.png").stat().st_size > 10_000
    rows = {(r["attack"], r["defense"]): r for r in _csv(tmp_path / "matrix-lr0p05-r4.csv")}
    assert len(rows) == 6
    assert float(rows[("a-ra", "sum")]["er@10 final"]) > float(rows[("a-ra", "median")]["er@10 final"])
    assert float(rows[("a-ra", "sum")]["target mal. share"]) > 0
    cells = sorted((tmp_path / "cells").glob("*.json"))
    assert main(args) == 0  # every cell cached: nothing reruns
    assert sorted((tmp_path / "cells").glob("*.json")) == cells
    partial = ["matrix", *common, "--attacks", "none,a-ra,a-hum", "--rho", "0.05", "--defenses", "sum,median",
               "--calibrated", "--cached-only"]
    assert main(partial) == 0  # a-hum never ran: reported without running it
    assert sorted((tmp_path / "cells").glob("*.json")) == cells
    assert {r["attack"] for r in _csv(tmp_path / "matrix-lr0p05-r4.csv")} == {"none", "a-ra"}
    clean_only = ["matrix", *common, "--attacks", "none", "--defenses", "sum,median", "--calibrated", "--cached-only"]
    assert main(clean_only) == 0  # no attack, no heatmap: the clean bars alone
    assert {r["attack"] for r in _csv(tmp_path / "matrix-lr0p05-r4.csv")} == {"none"}
    assert "-> " in capsys.readouterr().out


def test_calibrated_bounds_without_calibration_say_how_to_get_them(tmp_path, capsys):
    code = main(["matrix", "--datasets", "synthetic", "--defenses", "norm-bound", "--attacks", "none", "--calibrated",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "run `python -m experiments.federated_defenses calibrate --datasets synthetic`" in capsys.readouterr().err


def test_a_larger_model_on_a_new_split_gets_its_own_cells_and_table(tmp_path):
    common = ["matrix", "--datasets", "synthetic", "--epochs", "1", "--seeds", "0", "--attacks", "none",
              "--defenses", "sum", "--out", str(tmp_path)]
    assert main(common) == 0
    assert main([*common, "--dim", "16", "--layers", "16,8", "--split-seed", "0"]) == 0
    saved = {p.name: json.loads(p.read_text())["params"] for p in (tmp_path / "cells").glob("*.json")}
    assert "dim" not in saved["synthetic-lr0.001-r4-none-sum-seed0.json"]  # the paper's model keeps its old keys
    assert saved["synthetic-lr0.001-r4-d16-l16x8-resplit0-none-sum-seed0.json"]["layers"] == [16, 8]
    table = (tmp_path / "matrix-lr0p001-r4-d16-l16x8-resplit0.md").read_text()
    assert "split again at random (seed 0), NCF 16 / [16, 8]" in table


def _csv(path):
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

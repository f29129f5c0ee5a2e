"""Experiment sweeps: cached cells, sequential or on Ray workers, same results either way."""

from __future__ import annotations

import json
from pathlib import Path

from harness.sweep import Cell, run_sweep

CALLS: list[int] = []


def square(params: dict, folder: Path) -> dict:
    CALLS.append(params["x"])
    (folder / "note.txt").write_text("ran")
    return {"y": params["x"] ** 2}


def grid() -> list[Cell]:
    return [Cell(f"x{x}", {"x": x}) for x in range(4)]


def test_cells_run_once_and_rerun_when_their_parameters_change(tmp_path):
    CALLS.clear()
    results = run_sweep(grid(), square, tmp_path, progress=False)
    assert results == {f"x{x}": {"y": x * x} for x in range(4)}
    assert run_sweep(grid(), square, tmp_path, progress=False) == results
    assert CALLS == [0, 1, 2, 3]  # the second sweep came from the cache
    assert (tmp_path / "cells" / "x2" / "note.txt").read_text() == "ran"
    changed = [Cell("x1", {"x": 5})]
    assert run_sweep(changed, square, tmp_path, progress=False) == {"x1": {"y": 25}}
    assert json.loads((tmp_path / "cells" / "x1.json").read_text())["params"] == {"x": 5}


def test_ray_workers_give_the_sequential_results(tmp_path):
    sequential = run_sweep(grid(), square, tmp_path / "seq", progress=False)
    parallel = run_sweep(grid(), square, tmp_path / "ray", workers=2, progress=False)
    assert parallel == sequential

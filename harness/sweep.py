"""Experiment sweeps: run a grid of independent cells (one experiment each), sequentially or on
Ray workers (a laptop's cores or a cluster via ``RAY_ADDRESS``), with a cached result per cell.

A cell's result is stored as ``<out>/cells/<key>.json`` together with its parameters; a rerun
(or another figure sharing cells) skips every cell whose stored parameters are identical, so
an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.atomic import atomic_write_text

CellFunction = Callable[[dict[str, Any], Path], Any]  # (params, cell folder) -> JSON-serialisable result


@dataclass(frozen=True)
class Cell:
    """One experiment of a sweep: a unique ``key`` (file-name safe) and its JSON parameters."""

    key: str
    params: dict[str, Any]


def _cached(path: Path, params: dict[str, Any]) -> tuple[bool, Any]:
    if not path.is_file():
        return False, None
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False, None
    return (saved.get("params") == params, saved.get("result"))


def _store(path: Path, params: dict[str, Any], result: Any) -> None:
    atomic_write_text(path, json.dumps({"params": params, "result": result}, indent=1) + "\n")


def cached_results(cells: Sequence[Cell], out: str | Path) -> dict[str, Any]:
    """The stored results of the ``cells`` that already ran with the same parameters (a report of a partial
    sweep: nothing runs)."""
    folder = Path(out) / "cells"
    hits = {cell.key: _cached(folder / f"{cell.key}.json", cell.params) for cell in cells}
    return {key: result for key, (hit, result) in hits.items() if hit}


def run_sweep(
    cells: Sequence[Cell],
    function: CellFunction,
    out: str | Path,
    *,
    workers: int = 1,
    gpus_per_cell: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``function(params, folder)`` for every cell not cached under ``out``; return results by key.

    ``workers > 1`` (or ``RAY_ADDRESS`` set) runs cells as Ray tasks with one CPU (and
    ``gpus_per_cell`` GPUs) each; ``function`` must then be importable (a module-level function).
    """
    keys = [cell.key for cell in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("sweep cell keys must be unique")
    folder = Path(out) / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    todo: list[Cell] = []
    for cell in cells:
        hit, result = _cached(folder / f"{cell.key}.json", cell.params)
        if hit:
            results[cell.key] = result
        else:
            todo.append(cell)
    bar = _bar(len(cells), len(cells) - len(todo), progress)
    if todo and (workers > 1 or os.environ.get("RAY_ADDRESS")):
        for cell, result in _run_on_ray(todo, function, folder, workers, gpus_per_cell):
            _store(folder / f"{cell.key}.json", cell.params, result)
            results[cell.key] = result
            bar.update(1)
    else:
        for cell in todo:
            bar.set_description(cell.key)
            results[cell.key] = function(cell.params, _cell_dir(folder, cell))
            _store(folder / f"{cell.key}.json", cell.params, results[cell.key])
            bar.update(1)
    bar.close()
    return {key: results[key] for key in keys}


def _cell_dir(folder: Path, cell: Cell) -> Path:
    path = folder / cell.key
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_on_ray(todo: list[Cell], function: CellFunction, folder: Path, workers: int, gpus: float):
    """Yield (cell, result) as Ray tasks finish."""
    import ray

    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(_call_single_threaded)
        pending = {remote.remote(function, cell.params, str(_cell_dir(folder, cell))): cell for cell in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _call_single_threaded(function: CellFunction, params: dict[str, Any], folder: str) -> Any:
    import torch

    torch.set_num_threads(1)  # one core per cell; oversubscribed threads slow tiny ops badly
    return function(params, Path(folder))


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_description(self, text: str) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, done: int, progress: bool):
    if not progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="cell", dynamic_ncols=True)

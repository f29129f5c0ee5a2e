"""Run one simulation through the Flower ServerApp/ClientApp on the chosen backend."""

from __future__ import annotations

import ctypes
import gc
from pathlib import Path
from typing import Any

import torch

from clients.app import app as client_app
from clients.strategy import load_strategy_class
from federation.assignments import assign_strategies
from federation.checkpoints import CHECKPOINT
from federation.config import ConfigError, SimulationConfig, usable_cores
from federation.plan import dataset_for, make_plan
from harness.reporting import RunWriter
from server.aggregation import load_rule
from server.app import make_server_app


def configure_threads(config: SimulationConfig, cores: int | None = None) -> None:
    """Give torch the cores this process may use (set deliberately: oversubscription makes tiny ops ~100x slower)."""
    cores = cores or usable_cores()
    torch.set_num_threads(max(1, cores // max(1, config.resolved_shards())) if config.backend == "inprocess" else 1)


def check_run(config: SimulationConfig) -> None:
    """Fail before the run starts, with one line saying what was wrong, on a bad plug-in name, file or class
    (every client strategy and the aggregation rule are loaded, every client id is checked) and on an attack without attackers."""
    plan = make_plan(config, dataset_for(config))
    if config.attack != "none" and not plan.malicious_ids:
        raise ConfigError(f"--attack {config.attack} with --malicious-frac {config.malicious_frac:g} injects "
                          f"floor({plan.num_benign} x {config.malicious_frac:g}) = 0 malicious clients; pass a larger "
                          "--malicious-frac (paper: 0.005 on fed-ml, 0.001 on fed-az) or --attack none")
    try:
        assign_strategies(plan.assignments, plan.num_clients)  # client ids in range
        for assignment in plan.assignments:
            load_strategy_class(assignment.spec)
        load_rule(config, config.model_spec(plan.num_items))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def release_memory() -> None:
    """Collect a finished run's garbage and hand the freed heap back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere): without it a process running sequential cells grows by fragmentation (ML-1M, one-epoch cells:
    741 → 924 MiB over 15 cells with ``gc.collect`` alone, 547–612 MiB with both)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run(config: SimulationConfig, echo: bool = True, cores: int | None = None) -> list[dict[str, float]]:
    """Run ``config`` on ``cores`` CPU cores (default: all this process may use); return the metric
    history (also written to the run folder)."""
    check_run(config)
    writer = RunWriter(config, echo=echo)
    num_nodes = make_plan(config, dataset_for(config)).num_shards
    server_app = make_server_app(config, writer)
    try:
        if config.backend == "inprocess":
            from harness.inprocess import run_inprocess

            configure_threads(config, cores)
            run_inprocess(server_app, client_app, num_nodes)
        else:
            from harness.ray_engine import run_ray

            run_ray(server_app, client_app, num_nodes, config)
    finally:
        release_memory()
    return writer.history


def run_in_folder(params: dict[str, Any], folder: Path) -> list[dict[str, float]]:
    """A sweep cell's federated run: settings ``params`` (``SimulationConfig`` fields), one shard, this process's
    torch threads, the run folder ``folder``, resumed from its checkpoint when one is there."""
    resume = (folder / CHECKPOINT).is_file()
    config = SimulationConfig.from_mapping({**params, "num_shards": 1, "out": str(folder), "resume": resume,
                                            "overwrite": not resume})
    return run(config, echo=False, cores=torch.get_num_threads())

"""Flower's simulation engine with Ray workers: one actor per ``client_num_cpus`` cores, on one
machine or a Ray cluster (set ``RAY_ADDRESS`` to join one)."""

from __future__ import annotations

import logging

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from federation.config import SimulationConfig


def run_ray(server_app: ServerApp, client_app: ClientApp, num_nodes: int, config: SimulationConfig) -> None:
    """Run through ``flwr.simulation.run_simulation`` with the configured client resources."""
    backend_config = {
        "client_resources": {"num_cpus": config.client_num_cpus, "num_gpus": config.client_num_gpus},
        "init_args": {"logging_level": logging.ERROR, "log_to_driver": True},
    }
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_nodes,
                   backend_config=backend_config)

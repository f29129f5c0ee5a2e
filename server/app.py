"""The Flower ``ServerApp`` (``app``), used by ``flwr run .`` and by ``simulate.py``."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.config import SimulationConfig
from server.loop import FederatedServer, Observer


def make_server_app(config: SimulationConfig | None = None, observer: Observer | None = None) -> ServerApp:
    """A ServerApp for ``config`` (default: read from the run config, as ``flwr run`` passes it)."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        from harness.reporting import RunWriter

        run_config = config or SimulationConfig.from_mapping(dict(context.run_config))
        FederatedServer(grid, run_config, observer or RunWriter(run_config)).run()

    return server_app


app = make_server_app()

"""The Flower ``ServerApp`` factory: the training loop of ``server.loop`` behind Flower's ``ServerApp`` API."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.config import SimulationConfig
from server.loop import FederatedServer, Observer


def make_server_app(config: SimulationConfig | None = None, observer: Observer | None = None,
                    observer_factory: Callable[[SimulationConfig], Observer] | None = None) -> ServerApp:
    """A ServerApp for ``config`` (default: read from the run config, as ``flwr run`` passes it), reporting to
    ``observer`` (or to one built by ``observer_factory`` from the resolved config)."""
    if observer is None and observer_factory is None:
        raise ValueError("make_server_app needs an observer or an observer_factory")
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = config or SimulationConfig.from_mapping(dict(context.run_config))
        FederatedServer(grid, run_config, observer or observer_factory(run_config)).run()

    return server_app

"""The Flower app components that ``flwr run .`` loads (``[tool.flwr.app.components]`` in pyproject.toml):
the ServerApp writing the run folder, and the ClientApp."""

from __future__ import annotations

from clients.app import app as client_app
from harness.reporting import RunWriter
from server.app import make_server_app

server_app = make_server_app(observer_factory=RunWriter)

__all__ = ["client_app", "server_app"]

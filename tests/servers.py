"""An in-process ASGI app (the recorder's HTTP API) served on a loopback port for a test, by the
simulator's own `SimulatorServer` (uvicorn in a background thread): one server runner for the
simulated Metrics API and for the apps under test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

from recorder.simulator import SimulatorServer


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields its base URL."""
    with SimulatorServer(app) as server:
        yield server.url

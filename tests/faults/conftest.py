"""The fault suite: each case records the figures it proves (samples served, stored, lost,
dropped-and-counted); they are printed at the end of the run and quoted in the README."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.faults.service import record
from tests.pgcluster import own_postgres

__all__ = ["own_postgres"]  # a fixture for the outage and freeze cases

_FIGURES: dict[str, Path] = {}


@pytest.fixture(scope="session")
def figures_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "fault-figures.json"
    _FIGURES["path"] = path
    return path


@pytest.fixture
def figure(figures_file: Path, request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figure(**numbers)`` records this case's figures under the test's name."""

    def save(**numbers: float) -> None:
        record(figures_file, request.node.name, **numbers)

    return save


@pytest.fixture
def simulator() -> Iterator[str]:
    """A small simulated cluster with a new metric resolution every second (real clock)."""
    config = SimulatorConfig(nodes=3, pods=12, seed=7, resolution_seconds=1)
    with SimulatorServer(create_app(ClusterModel(config))) as server:
        yield server.url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = _FIGURES.get("path")
    if path is None or not path.exists():
        return
    terminalreporter.section("fault suite figures")
    for case, numbers in sorted(json.loads(path.read_text()).items()):
        shown = ", ".join(f"{k}={v:g}" for k, v in numbers.items())
        terminalreporter.write_line(f"{case}: {shown}")

"""Fixtures of the integration tests: the HTTP API's (test_api_history, test_api_probes,
test_api_errors) and a migrated PostgreSQL database (the leader and handover tests)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store, open_store
from tests.api_support import NOW, write_history
from tests.servers import serving


@pytest.fixture
def migrated(postgres_url: str) -> str:
    """The shared PostgreSQL test database's URL, migrated to the newest schema."""
    store = open_store(postgres_url)
    store.migrate()
    store.close()
    return postgres_url


@pytest.fixture
def api_store(store: Store) -> Store:
    """The shared store (tests/conftest.py: SQLite and PostgreSQL) with two containers' and a
    node's samples of a minute ago (``tests.api_support.write_history``)."""
    return write_history(store)


@pytest.fixture
def client(api_store: Store) -> Iterator[httpx.Client]:
    """The app over ``api_store``, served on a loopback port, at ``NOW``."""
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(
        api_store,
        registry,
        poller_status=lambda: {"poll": "ok"},
        clock=lambda: NOW,
        max_points=100,
        max_range_ms=400 * 86_400_000,
    )
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client

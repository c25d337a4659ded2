from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures"


SERIAL_FOLDERS = frozenset({"e2e", "faults"})
"""Tests that start the recorder, the simulator, Prometheus or PostgreSQL clusters as processes
and wait on them with deadlines."""
SERIAL_MODULES = frozenset(
    {
        "test_api_limits.py",  # /livez under 50 clients within 100 ms, slowloris deadlines
        "test_kube_limits.py",  # a read's deadline between 0.35 and 0.8 s
        "test_kube_streaming.py",  # the same, streamed
        "test_store_engine.py",  # a refused write within 0.3 s during an outage
        "test_store_leader.py",  # a takeover within the lease and two checks
    }
)
"""Modules elsewhere that time what they test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``serial`` what must not share the two cores with another test: ``.ci/run`` runs
    the other tests two at a time (pytest-xdist), then these one at a time."""
    tests = Path(__file__).resolve().parent
    for item in items:
        path = item.path.resolve()
        folder = path.relative_to(tests).parts[0] if path.is_relative_to(tests) else ""
        if folder in SERIAL_FOLDERS or path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def shared_fixtures() -> Path:
    assert SHARED_FIXTURES.is_dir(), f"{SHARED_FIXTURES} is missing (shared/ beside the checkout)"
    return SHARED_FIXTURES


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'recorder.db'}"


# --- databases: every store test runs on a SQLite file and on a real PostgreSQL database ----

import os  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import sqlalchemy  # noqa: E402

from recorder.store import Store, open_store  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "RECORDER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new PostgreSQL database on the test server, dropped when the block ends."""
    name = f"recorder_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'recorder.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store on each database (``database_url``), closed afterwards."""
    store = open_store(database_url)
    store.migrate()
    yield store
    store.close()

"""What each process imports: the worker, told the schema head by the server, checks the database
against it and never imports Alembic (about 10 MB resident); on SQLite neither process imports
the PostgreSQL driver (about 10 MB in each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ConfigError
from recorder.settings import Settings
from recorder.store.migrate import head_revision
from recorder.worker import open_write_store, ready_store

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from recorder.settings import Settings
from recorder.worker import build_poll_path
settings = Settings(api_url="http://127.0.0.1:9", database_url=sys.argv[1])
path = build_poll_path(settings, write_inline=False, announce=False, schema_head=sys.argv[2])
path.store.close()
print(json.dumps({
    name: sorted(m for m in sys.modules if m.split(".")[0] == name)
    for name in ("alembic", "psycopg")
}))
"""

SERVER = """
import json, sys
import recorder.service, recorder.api.app, recorder.cli
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "psycopg")))
"""


def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    store = open_write_store(Settings(api_url="http://127.0.0.1:9", database_url=url))
    store.migrate()
    store.close()
    return url


def printed(code: str, *args: str) -> Any:
    """What a new interpreter running ``code`` with ``args`` prints last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_worker_poll_path_is_built_without_alembic(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    head = head_revision()
    assert head is not None
    assert printed(CHILD, url, head) == {"alembic": [], "psycopg": []}


def test_the_server_process_imports_no_postgresql_driver_until_one_is_used() -> None:
    assert printed(SERVER) == []


def test_a_schema_head_the_database_is_not_at_is_refused(tmp_path: Path) -> None:
    url = migrated(tmp_path)
    store = open_write_store(Settings(api_url="http://127.0.0.1:9", database_url=url))
    with pytest.raises(ConfigError, match="not at the current schema"):
        ready_store(store, schema_head="9999")

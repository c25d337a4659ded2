"""Migrations are atomic on SQLite, and the schema check is quiet.

For every revision of the Alembic history (read from the script directory, so a new migration
is covered without touching this file) and for every SQL statement of its upgrade, a child
process upgrades a database from the revision before and SIGKILLs itself right before or right
after that statement (a ``before_cursor_execute``/``after_cursor_execute`` listener installed by
the child: a seam of this test, not of the product). Then:

- the killed database holds exactly the schema of the revision before or of the revision itself,
  never a part of one (issue 10 row 10: "table series already exists" crash loop);
- a fresh ``Store.migrate()`` (what ``recorder migrate`` runs) succeeds, and the schema equals a
  clean upgrade's and the code's (``compare_metadata`` empty).

Kill points are sampled evenly (always the first and the last) when a history gets long, so
the test stays well under a minute.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from recorder import commands
from recorder.settings import Settings
from recorder.store import engine as engines
from recorder.store import migrate, open_store, schema
from recorder.worker import migrate_to_newest, ready_store

REPO = Path(__file__).resolve().parents[2]
MAX_KILL_POINTS = 48
"""Kill points over the whole history; each revision gets at least 6."""

CHILD = r"""
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from recorder.store import engine as engines, migrate

url, revision, kill_at, when = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
count = 0

def before(conn, cursor, statement, parameters, context, executemany):
    if when == "before" and count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def after(conn, cursor, statement, parameters, context, executemany):
    global count
    if when == "after" and count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    count += 1

event.listen(Engine, "before_cursor_execute", before)
event.listen(Engine, "after_cursor_execute", after)
migrate.upgrade(engines.create(url), revision=revision)
print(count)
"""


def history() -> list[tuple[str | None, str]]:
    """(revision before, revision) from the first migration to the newest."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    steps = []
    for rev in reversed(list(script.walk_revisions())):
        down = rev.down_revision
        assert not isinstance(down, tuple), "merge revisions: extend this test"
        steps.append((down, rev.revision))
    return steps


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def child(path: Path, revision: str, kill_at: int = -1, when: str = "never") -> int | None:
    """Run the child; the number of statements it ran, or ``None`` when it was killed."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url_of(path), revision, str(kill_at), when],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if result.returncode == -signal.SIGKILL:
        return None
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def snapshot(path: Path) -> list[tuple[str, ...]]:
    """Every table, index and trigger with its SQL, and the recorded revision."""
    engine = engines.create(url_of(path))
    try:
        with engine.connect() as conn:
            objects = conn.execute(
                text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
            ).all()
            version = migrate.current_revision(engine)
    finally:
        engine.dispose()
    return [tuple(str(v) for v in row) for row in objects] + [("version", str(version))]


def copy_db(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")


def kill_points(statements: int, budget: int) -> list[tuple[int, str]]:
    points = [(i, when) for i in range(statements) for when in ("before", "after")]
    if len(points) <= budget:
        return points
    step = (len(points) - 1) / (budget - 1)
    return sorted({points[round(k * step)] for k in range(budget)})


def test_history_is_found() -> None:
    steps = history()
    assert steps[0][0] is None and steps[-1][1] == migrate.head_revision()


def upgrade(path: Path, revision: str) -> None:
    engine = engines.create(url_of(path))
    try:
        migrate.upgrade(engine, revision=revision)
    finally:
        engine.dispose()


def test_a_migration_killed_at_any_statement_leaves_a_whole_schema(tmp_path: Path) -> None:
    head_db = tmp_path / "head.db"
    upgrade(head_db, "head")
    at_head = snapshot(head_db)
    steps = history()
    budget = max(6, MAX_KILL_POINTS // len(steps))
    killed = 0
    for down, revision in steps:
        before_db = tmp_path / f"{revision}-before.db"
        clean_db = tmp_path / f"{revision}-clean.db"
        if down is not None:
            upgrade(before_db, down)
        clean_before = snapshot(before_db)
        copy_db(before_db, clean_db)
        statements = child(clean_db, revision)
        assert statements is not None and statements > 0
        clean_after = snapshot(clean_db)
        assert clean_after != clean_before
        points = kill_points(statements, budget)
        targets = [tmp_path / f"{revision}-kill-{i}.db" for i in range(len(points))]
        for target in targets:
            copy_db(before_db, target)
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(
                pool.map(
                    child,
                    targets,
                    [revision] * len(points),
                    [kill_at for kill_at, _ in points],
                    [when for _, when in points],
                )
            )
        assert outcomes == [None] * len(points), "every child was killed where it was told"
        killed += len(points)
        for target, point in zip(targets, points, strict=True):
            left = snapshot(target)
            assert left in (clean_before, clean_after), f"half a schema after a kill at {point}"
            store = open_store(url_of(target))  # then `recorder migrate`
            store.migrate()
            with store.engine.connect() as conn:
                context = MigrationContext.configure(
                    conn,
                    opts={
                        "include_name": schema.include_name,
                        "include_object": schema.include_object_for(conn.dialect.name),
                    },
                )
                assert compare_metadata(context, schema.metadata) == []
            store.close()
            assert snapshot(target) == at_head, point
    assert killed >= 6


def test_the_schema_check_logs_nothing_and_migrate_says_what_it_does(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(database_url)
    with caplog.at_level(logging.INFO):
        assert store.schema_is_current() is False
        store.migrate()
        migrating = [r.getMessage() for r in caplog.records]
        caplog.clear()
        for _ in range(3):
            assert store.schema_is_current() is True
            store.ping()
    assert caplog.records == []
    assert any(m.startswith("Running upgrade  -> 0001") for m in migrating), migrating
    store.close()


def test_each_migration_commits_with_its_version(database_url: str) -> None:
    """transaction_per_migration: the version row is written in the migration's transaction."""
    store = open_store(database_url)
    store.migrate()
    with store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [migrate.head_revision()]
    store.close()


def test_a_later_revision_from_a_newer_release_is_run_on_not_migrated(database_url: str) -> None:
    """A rolling upgrade: the first new pod migrated the database to a later revision while
    this release's replicas run. They stay ready, a restarted worker starts again, and this
    release's ``recorder migrate`` (an old pod's init container) leaves the schema alone."""
    store = open_store(database_url)
    try:
        store.migrate()
        head = migrate.head_revision()
        assert head is not None
        later = f"{int(head) + 1:04d}"
        with store.engine.begin() as conn:  # what a newer release's additive migration does
            conn.execute(text("CREATE TABLE newer_release_table (id INTEGER PRIMARY KEY)"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": later})
        assert store.schema_is_current() is True
        assert store.schema_is_current(head=head) is True  # the worker's check
        assert migrate_to_newest(store) is None
        assert ready_store(store, schema_head=head) is store
        said = commands.migrate(Settings(database_url=database_url))
        assert f"is at schema {later}, later than this release's {head}" in said, said
        assert migrate.current_revision(store.engine) == later
        with store.engine.begin() as conn:  # an earlier revision is still to be migrated
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": "0001"})
        assert store.schema_is_current() is False
    finally:
        store.close()

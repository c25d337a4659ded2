"""Schema migrations through Alembic, driven from code (``recorder migrate``, ``run``).

Every migration runs in one transaction, with its version bump, on both dialects: on SQLite the
migration engine makes DDL transactional (``engine.create(for_migrations=True)``), so a
``kill -9`` in the middle of a migration leaves the schema as it was before it.

The schema check behind ``/readyz`` reads the version table directly: no Alembic context, so
no log lines per probe. Alembic itself is imported only to read the shipped head revision or to
migrate: the worker process, told the head by the server, never loads it (about 10 MB).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from recorder.errors import StoreError
from recorder.store import engine as engines

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "alembic_version"


def _migrations_dir() -> Path:
    # Shipped inside the package as recorder._migrations (see pyproject.toml); in a source
    # checkout the same files live in the top-level migrations/ folder, which wins: an
    # editable install maps recorder._migrations to the checkout it was installed from, which
    # may be another one (a git worktree) than the code running.
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "migrations" / "env.py").is_file():
        return checkout / "migrations"
    try:
        shipped = Path(str(resources.files("recorder._migrations")))
    except ModuleNotFoundError:
        shipped = None
    if shipped is not None and (shipped / "env.py").exists():
        return shipped
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration; ``engine`` (a migration engine) is what env.py migrates."""
    from alembic.config import Config  # Alembic only where it is used: about 10 MB resident

    config = Config()
    config.set_main_option("script_location", str(_migrations_dir()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


@functools.cache
def _head_revision(directory: Path) -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(config).get_current_head()


def head_revision(_engine: Engine | None = None) -> str | None:
    """The newest revision of the migrations shipped with this version (read once)."""
    return _head_revision(_migrations_dir())


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or ``None`` before the first migration."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(versions) > 1:
        raise StoreError(
            f"the database has several schema versions {sorted(versions)}: it was migrated by "
            "diverging versions of the recorder; restore it from a backup"
        )
    return versions[0] if versions else None


def upgrade(
    engine: Engine, *, timeouts: engines.Timeouts | None = None, revision: str = "head"
) -> None:
    """Migrate the database of ``engine`` to ``revision``, through a migration engine of its
    own (transactional DDL on SQLite, no statement timeout on PostgreSQL)."""
    migrating = engines.create(
        engine.url.render_as_string(hide_password=False), timeouts=timeouts, for_migrations=True
    )
    from alembic import command

    try:
        command.upgrade(alembic_config(migrating), revision)
    except engines.DATABASE_ERRORS as exc:
        shown = engines.redact(engine.url.render_as_string(hide_password=False))
        failed = engines.failure(exc, f"migrating {shown}", timeouts)
        raise type(failed)(f"{failed}; nothing of the failed migration was applied") from exc
    except Exception as exc:
        raise StoreError(
            f"migrating the database failed: {engines.reason(exc)}: nothing of the failed "
            "migration was applied; fix the cause and run `recorder migrate` again"
        ) from exc
    finally:
        migrating.dispose()


def is_later(revision: str | None, head: str | None) -> bool:
    """Whether ``revision`` is a later migration than ``head``, one that a newer release of the
    recorder applied. Revisions are numbered ``0001``, ``0002``... each on the one before
    (``tests/unit/test_migration_numbers.py`` holds every release to it), so a number above
    this release's head is a later revision, and anything else is not."""
    if revision is None or head is None or not (revision.isdigit() and head.isdigit()):
        return False
    return int(revision) > int(head)


def is_current(engine: Engine, head: str | None = None) -> bool:
    """Whether this code runs on the database as it is: at ``head`` (default: the newest
    shipped revision, which Alembic reads from the migrations; a caller that knows it already
    passes it), or at a later revision that a newer release migrated it to.

    Later revisions are accepted because every migration keeps the release before it working
    (tables and nullable or defaulted columns are added; what is dropped or renamed goes a
    release after the code stopped using it): in a rolling upgrade the first new pod migrates
    while the old replicas go on serving and writing, ready, and a worker of theirs that
    restarts starts again."""
    head = head if head is not None else head_revision()
    revision = current_revision(engine)
    return revision == head or is_later(revision, head)

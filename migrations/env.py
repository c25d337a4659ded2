"""Alembic environment. ``recorder migrate`` passes its migration engine in
``config.attributes``; the plain ``alembic`` command reads ``RECORDER_DATABASE_URL`` (or
``sqlalchemy.url``) instead.

Each migration runs in its own transaction together with its version bump
(``transaction_per_migration``), on SQLite too: the migration engine makes SQLite's DDL
transactional (``recorder.store.engine.create(for_migrations=True)``), so a process killed in
the middle of a migration leaves the schema of the revision before it.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Engine

from recorder.store.engine import create
from recorder.store.schema import include_name, include_object_for, metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url") or os.environ.get(
            "RECORDER_DATABASE_URL", "sqlite:///recorder.db"
        )
        engine = create(url, for_migrations=True)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                include_name=include_name,
                include_object=include_object_for(connection.dialect.name),
                render_as_batch=connection.dialect.name == "sqlite",
                transaction_per_migration=True,
                transactional_ddl=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `recorder migrate`")
run_migrations_online()

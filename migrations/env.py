"""Alembic environment. ``recorder migrate`` passes its engine in ``config.attributes``; the
plain ``alembic`` command reads ``RECORDER_DATABASE_URL`` (or ``sqlalchemy.url``) instead."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from recorder.store.schema import include_name, metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = config.get_main_option("sqlalchemy.url") or os.environ.get(
            "RECORDER_DATABASE_URL", "sqlite:///recorder.db"
        )
        engine = create_engine(url)
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_name=include_name,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `recorder migrate`")
run_migrations_online()

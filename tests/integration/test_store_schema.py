"""The code's schema (``recorder.store.schema``) is what the migrations build, on SQLite and
PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from recorder.store import Store, schema


def test_migrations_build_exactly_the_code_schema(store: Store) -> None:
    assert store.schema_is_current()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": schema.include_name,
                "include_object": schema.include_object_for(conn.dialect.name),
            },
        )
        diff = compare_metadata(context, schema.metadata)
    assert diff == []

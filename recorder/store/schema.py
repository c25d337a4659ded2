"""The database schema, in SQLAlchemy Core. Alembic migrations in ``migrations/`` build exactly
this (a test compares them).

- ``series`` dictionary-encodes a series' identity; ``samples_head`` refers to it by id.
- ``pod_labels`` keeps each pod's latest labels beside the series (for label selectors).
- ``samples_head`` is append-only in time order with no per-series index: only ``ts_ms`` is
  indexed, so every write lands at the end of the table and of its one index (design §5).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("node", String(253), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("pod", String(253), nullable=False),
    Column("container", String(253), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    UniqueConstraint("kind", "node", "namespace", "pod", "container"),
)

pod_labels = Table(
    "pod_labels",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("pod", String(253), primary_key=True),
    Column("labels_json", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

samples_head = Table(
    "samples_head",
    metadata,
    Column("ts_ms", BigInteger, nullable=False),
    Column("series_id", Integer, nullable=False),
    Column("window_ms", Integer, nullable=False),
    Column("cpu_nanocores", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Index(None, "ts_ms"),
)

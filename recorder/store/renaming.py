"""A single-cluster SQLite history under another cluster name, for ``recorder copy
--as-cluster``: the source file is copied (SQLite's online backup, so a recorder may be
writing it) into a scratch file beside it, every table's ``cluster`` column is set to the new
name there, and the copy reads that scratch file; the source is never changed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import make_url

from recorder.errors import ConfigError
from recorder.store import schema

__all__ = ["renamed_sqlite_copy", "sqlite_path"]

SCRATCH_SUFFIX = ".as-cluster.tmp"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (``ConfigError`` for any other database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.query:
        raise ConfigError(
            "--as-cluster copies from a SQLite file (sqlite:///path): a PostgreSQL history "
            "keeps its cluster names"
        )
    return Path(parsed.database)


def renamed_sqlite_copy(source: Path, cluster: str) -> Path:
    """A scratch copy of ``source`` (beside it) whose every row belongs to ``cluster``; the
    caller deletes it. ``ConfigError`` when the source holds more than one cluster."""
    scratch = source.with_name(source.name + SCRATCH_SUFFIX)
    scratch.unlink(missing_ok=True)
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        writer = sqlite3.connect(scratch)
        try:
            reader.backup(writer)
        finally:
            writer.close()
    finally:
        reader.close()
    engine = create_engine(f"sqlite:///{scratch}")
    try:
        with engine.begin() as conn:
            s = schema.series
            clusters = list(conn.execute(select(s.c.cluster).distinct().limit(3)).scalars())
            if len(clusters) > 1:
                raise ConfigError(
                    f"{source} holds several clusters ({', '.join(sorted(clusters))}...): "
                    "--as-cluster renames a single-cluster history"
                )
            for table in schema.metadata.sorted_tables:
                if "cluster" in table.c:
                    conn.execute(update(table).values(cluster=cluster))
    except BaseException:
        engine.dispose()
        scratch.unlink(missing_ok=True)
        raise
    engine.dispose()
    return scratch

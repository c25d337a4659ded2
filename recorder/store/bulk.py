"""Rows believed new, stored at once: ``COPY`` on PostgreSQL, a plain ``INSERT`` on SQLite.

The writer knows which series and pods' labels it has stored, but not every row the database
holds: its maps forget what was not written for an hour, and another writer may have added one
meanwhile. So the rows go in a savepoint, and when the database refuses them for their content
(a unique violation: a row already there; or a value it does not take) the savepoint is rolled
back and the caller stores the same rows the slow way, ``INSERT ... ON CONFLICT`` a part at a
time through SQLAlchemy, exactly as before. Any other failure (the server gone, a timeout, a
lock) is raised: the slow way would only wait for it again.

Measured on PostgreSQL 15 (this project's test machine, 2 cores) with the recorder's schema,
204,000 new series: ``executemany`` of the upsert in parts of 5,000 took 10.6 s; ``COPY`` into a
temporary table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` 4.7-5.3 s; ``unnest`` of
arrays with the same upsert 7.6-8.3 s; ``COPY`` straight into the table 2.8-2.9 s, and 1.4-1.7 s
with the rows in the unique index's order (``sorted``: each key lands beside the last one).
On SQLite (WAL), the same rows: SQLAlchemy's upserts of parameter dictionaries 4.6 s, the
driver's ``executemany`` of tuples 2.4 s, and 1.4 s sorted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

log = logging.getLogger(__name__)


def insert_new(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> bool:
    """Store ``rows`` (values of ``columns``, in that order) in ``table`` at once, in a
    savepoint of ``conn``'s transaction: one ``COPY`` on PostgreSQL, the driver's own
    ``executemany`` of a plain ``INSERT`` on SQLite. True once stored; False when the database
    refused the rows' content, nothing of them stored (the savepoint rolled back): store them
    another way. Raises any other failure, the savepoint rolled back."""
    postgresql = conn.dialect.name == "postgresql"
    driver: Any = conn.connection.dbapi_connection
    if not postgresql and not driver.in_transaction:
        # pysqlite begins a transaction at its first write: a SAVEPOINT before that begins one
        # of its own, whose RELEASE commits the rows at once, whatever the caller's does next.
        driver.execute("BEGIN")
    savepoint = conn.begin_nested()
    cursor: Any = driver.cursor()
    try:
        if postgresql:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    except Exception as exc:
        savepoint.rollback()
        if not isinstance(exc, _refusals(postgresql)):
            raise
        log.debug("bulk insert into %s refused (%s); upserting the rows instead", table, exc)
        return False
    finally:
        cursor.close()
    savepoint.commit()
    return True


def _refusals(postgresql: bool) -> tuple[type[Exception], ...]:
    """What the driver raises for rows it or the database refuses: a row already there or a
    rule broken (integrity), a value out of range or too long (data), a text it cannot encode
    (``UnicodeError``, a ``ValueError``), an integer past 64 bits (``OverflowError``)."""
    if postgresql:
        import psycopg  # loaded already: the dialect is PostgreSQL's

        return (psycopg.IntegrityError, psycopg.DataError, ValueError, OverflowError)
    return (sqlite3.IntegrityError, sqlite3.DataError, ValueError, OverflowError)

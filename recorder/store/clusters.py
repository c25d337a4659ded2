"""Which clusters a database holds, and the rule that keeps a recorder from writing its
samples into a fleet database under a name it did not choose: without ``--cluster``
(``RECORDER_CLUSTER``), a recorder refuses a database that holds another cluster's history.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from recorder.errors import ConfigError
from recorder.settings import Settings
from recorder.store import schema

__all__ = ["MAX_NAMED", "require_own_cluster", "stored_clusters"]

MAX_NAMED = 5
"""How many of the stored clusters the refusal names."""


def stored_clusters(conn: Connection) -> list[str]:
    """The clusters with series in the database, sorted."""
    s = schema.series
    return sorted(conn.execute(select(s.c.cluster).distinct()).scalars())


def require_own_cluster(settings: Settings, stored: list[str], database: str) -> None:
    """``ConfigError`` (one line) when ``settings.cluster`` was not chosen (flag or
    environment) and ``stored`` holds a cluster other than it."""
    if "cluster" in settings.model_fields_set:
        return
    others = [name for name in stored if name != settings.cluster]
    if not others:
        return
    named = ", ".join(others[:MAX_NAMED]) + (", ..." if len(others) > MAX_NAMED else "")
    raise ConfigError(
        f"{database} holds the history of another cluster ({named}): pass --cluster NAME "
        f"(RECORDER_CLUSTER) to name this one (--cluster {settings.cluster} to write under "
        "the default name anyway)"
    )

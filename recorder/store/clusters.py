"""Which clusters a database holds, and the name a recorder records under.

``--cluster`` (``RECORDER_CLUSTER``) names it. Without it, the name is the kubeconfig
context's (made a label value: ``arn:aws:eks:eu-west-1:1:cluster/prod`` becomes
``arn-aws-eks-eu-west-1-1-cluster-prod``) for a new history, or ``default`` (``--api-url``,
in-cluster); a history recorded before under ``default`` alone keeps it. A recorder without
``--cluster`` refuses a database that holds another cluster's history (a fleet database:
every member names its cluster).
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, select

from recorder.errors import ConfigError
from recorder.settings import MAX_CLUSTER_CHARS, Settings, check_cluster
from recorder.store import schema

__all__ = ["MAX_NAMED", "choose_cluster", "label_value", "require_own_cluster", "stored_clusters"]

MAX_NAMED = 5
"""How many of the stored clusters the refusal names."""


def stored_clusters(conn: Connection) -> list[str]:
    """The clusters with series in the database, sorted."""
    s = schema.series
    return sorted(conn.execute(select(s.c.cluster).distinct()).scalars())


_NOT_LABEL = re.compile(r"[^-A-Za-z0-9_.]+")


def label_value(name: str) -> str | None:
    """``name`` as a Kubernetes label value (other characters become ``-``, cut at 63), or
    ``None`` when nothing of it is left."""
    value = _NOT_LABEL.sub("-", name)[:MAX_CLUSTER_CHARS].strip("-_.")
    try:
        check_cluster(value)
    except ValueError:
        return None
    return value


def choose_cluster(
    settings: Settings, context: str | None, stored: list[str], database: str
) -> str:
    """The cluster name to record under (see the module docstring); ``ConfigError`` when it
    was not chosen and ``stored`` holds another cluster."""
    if "cluster" in settings.model_fields_set:
        return settings.cluster
    derived = label_value(context) if context else None
    if derived is not None and (not stored or derived in stored):
        return derived
    require_own_cluster(settings, stored, database)
    return settings.cluster


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

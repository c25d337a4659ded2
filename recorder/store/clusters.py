"""Which clusters a database holds, and the name a recorder records under.

``--cluster`` (``RECORDER_CLUSTER``) names it. Without it, the name is the kubeconfig
context's (made a label value: ``arn:aws:eks:eu-west-1:1:cluster/prod`` becomes
``arn-aws-eks-eu-west-1-1-cluster-prod``) for a new history; in-cluster, where the API
server's address is the same in every cluster, it comes from the cluster's identity, the UID
of its ``kube-system`` namespace (``recorder.kube.identity``):

- the name already recorded beside that UID (a cluster once named keeps its name);
- else ``default`` when the database holds ``default`` alone and no other cluster's UID is
  recorded beside it (a single-cluster history from before keeps its name);
- else ``cluster-`` and the UID's first 8 characters (``cluster-6f1b2c3d``), or the whole
  UID after ``cluster-`` in the rare case those 8 are another cluster's.

So every in-cluster recorder of a fleet has a name of its own without ``--cluster``. Without
the UID (``--api-url``, or in-cluster without the RBAC to read it), the name is ``default``;
a history recorded before under ``default`` alone keeps it. Such a recorder, and one named by
a context not yet in the database, refuses a database that holds another cluster's history
(a fleet database: every member names its cluster).

Whenever the UID is known, it is kept beside the name in the ``clusters`` table (first and
last start seen): a name belongs to one cluster, and a recorder whose UID differs from the
one recorded for its name — ``--cluster prod`` given in two clusters — is refused with one
line instead of mixing two clusters' histories.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from recorder.errors import ConfigError
from recorder.settings import MAX_CLUSTER_CHARS, Settings, check_cluster
from recorder.store import schema

__all__ = [
    "MAX_NAMED",
    "KnownCluster",
    "choose_cluster",
    "known_clusters",
    "label_value",
    "record_identity",
    "require_own_cluster",
    "require_same_identity",
    "stored_clusters",
    "uid_name",
]

MAX_NAMED = 5
"""How many of the stored clusters the refusal names."""
UID_NAME_PREFIX = "cluster-"
SHORT_UID_CHARS = 8


@dataclass(frozen=True, slots=True)
class KnownCluster:
    """A row of the ``clusters`` table: a name and the cluster it belongs to."""

    name: str
    kube_system_uid: str
    first_seen_ms: int
    last_seen_ms: int


def stored_clusters(conn: Connection) -> list[str]:
    """The clusters with series in the database, sorted."""
    s = schema.series
    return sorted(conn.execute(select(s.c.cluster).distinct()).scalars())


def known_clusters(conn: Connection) -> dict[str, KnownCluster]:
    """The clusters whose ``kube-system`` UID is recorded, by name."""
    c = schema.clusters
    rows = conn.execute(
        select(c.c.cluster, c.c.kube_system_uid, c.c.first_seen_ms, c.c.last_seen_ms)
    )
    return {row[0]: KnownCluster(*row) for row in rows}


def record_identity(conn: Connection, name: str, uid: str, now_ms: int) -> None:
    """Keep ``uid`` beside ``name`` (a new row, or its last start moved to ``now_ms``). The
    caller checked the row first; a concurrent insert makes the primary key fail here."""
    c = schema.clusters
    changed = conn.execute(
        update(c).where(c.c.cluster == name, c.c.kube_system_uid == uid).values(last_seen_ms=now_ms)
    ).rowcount
    if not changed:
        conn.execute(
            insert(c).values(
                cluster=name, kube_system_uid=uid, first_seen_ms=now_ms, last_seen_ms=now_ms
            )
        )


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


def uid_name(uid: str, known: Mapping[str, KnownCluster]) -> str:
    """The name made from a ``kube-system`` UID: ``cluster-`` and its first 8 characters, or
    the whole UID when those 8 name another cluster in ``known``."""
    compact = _NOT_LABEL.sub("-", uid.lower()).strip("-_.")
    short = label_value(UID_NAME_PREFIX + compact[:SHORT_UID_CHARS].strip("-_."))
    owner = known.get(short) if short is not None else None
    if short is not None and (owner is None or owner.kube_system_uid == uid):
        return short
    full = label_value(UID_NAME_PREFIX + compact)
    if full is None:  # unreachable for a printable UID; a clear message if not
        raise ConfigError(f"the kube-system UID {uid!r} makes no cluster name: pass --cluster")
    return full


def choose_cluster(
    settings: Settings,
    context: str | None,
    stored: list[str],
    database: str,
    *,
    uid: str | None = None,
    known: Mapping[str, KnownCluster] | None = None,
) -> str:
    """The cluster name to record under (see the module docstring). ``uid``: the cluster's
    ``kube-system`` UID when it was read (in-cluster), ``known``: the ``clusters`` table.
    ``ConfigError`` (one line) when the name was not chosen and ``stored`` holds another
    cluster, or when the name is recorded beside another cluster's UID."""
    known = known or {}
    if "cluster" in settings.model_fields_set:
        name = settings.cluster
    elif uid is not None:
        name = _name_of_identity(settings, stored, uid, known)
    else:
        derived = label_value(context) if context else None
        if derived is not None and (not stored or derived in stored):
            return derived
        require_own_cluster(settings, stored, database)
        return settings.cluster
    if uid is not None:
        require_same_identity(name, uid, known, database)
    return name


def _name_of_identity(
    settings: Settings, stored: list[str], uid: str, known: Mapping[str, KnownCluster]
) -> str:
    mine = [k for k in known.values() if k.kube_system_uid == uid]
    if mine:
        return max(mine, key=lambda k: (k.last_seen_ms, k.name)).name
    default = settings.cluster
    if stored and set(stored) == {default} and default not in known:
        return default  # a single-cluster history from before keeps its name
    return uid_name(uid, known)


def require_same_identity(
    name: str, uid: str, known: Mapping[str, KnownCluster], database: str
) -> None:
    """``ConfigError`` (one line) when ``name`` is recorded beside another ``kube-system``
    UID than ``uid``: another cluster's history."""
    owner = known.get(name)
    if owner is None or owner.kube_system_uid == uid:
        return
    raise ConfigError(
        f"{database} holds the history of cluster {name} recorded from another cluster "
        f"(kube-system UID {owner.kube_system_uid}; this one's is {uid}): pass another "
        "--cluster NAME (RECORDER_CLUSTER) for this cluster, so the two histories stay apart "
        f"(if this is {name} re-created, `recorder delete --cluster {name}` frees the name, "
        "deleting its history)"
    )


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

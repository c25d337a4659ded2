"""Many clusters in one database: a recorder without ``--cluster`` refuses a database holding
another cluster's history; on PostgreSQL one recorder of the fleet at a time maintains, and
its round compacts and expires every cluster's closed blocks (the shared time blocks)."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import ConfigError
from recorder.settings import load_settings
from recorder.store import Store, open_store, schema
from recorder.store.clusters import (
    KnownCluster,
    choose_cluster,
    known_clusters,
    label_value,
    record_identity,
    require_own_cluster,
    uid_name,
)

HOUR_MS = 3_600_000
T0 = 1_714_550_400_000


def test_an_unnamed_recorder_refuses_another_clusters_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RECORDER_CLUSTER", raising=False)
    unnamed = load_settings()
    require_own_cluster(unnamed, [], "db")
    require_own_cluster(unnamed, ["default"], "db")
    with pytest.raises(ConfigError, match=r"db holds the history of another cluster \(a\)"):
        require_own_cluster(unnamed, ["a", "default"], "db")
    many = [f"c{i}" for i in range(8)]
    with pytest.raises(ConfigError, match=r"\(c0, c1, c2, c3, c4, \.\.\.\)"):
        require_own_cluster(unnamed, many, "db")
    require_own_cluster(load_settings(cluster="b"), ["a"], "db")  # named: a fleet member
    monkeypatch.setenv("RECORDER_CLUSTER", "b")
    require_own_cluster(load_settings(), ["a"], "db")


def test_the_name_is_the_flag_else_the_context_for_a_new_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RECORDER_CLUSTER", raising=False)
    unnamed, named = load_settings(), load_settings(cluster="eu-1")
    assert choose_cluster(named, "kind-kind", ["a", "b"], "db") == "eu-1"
    assert choose_cluster(unnamed, "kind-kind", [], "db") == "kind-kind"
    assert choose_cluster(unnamed, "kind-kind", ["kind-kind", "x"], "db") == "kind-kind"
    assert choose_cluster(unnamed, "kind-kind", ["default"], "db") == "default"  # kept
    assert choose_cluster(unnamed, None, [], "db") == "default"  # --api-url, in-cluster
    with pytest.raises(ConfigError, match="another cluster"):
        choose_cluster(unnamed, "kind-kind", ["x"], "db")
    eks = "arn:aws:eks:eu-west-1:123456789012:cluster/prod"
    assert (
        choose_cluster(unnamed, eks, [], "db") == "arn-aws-eks-eu-west-1-123456789012-cluster-prod"
    )


UID_A = "6f1b2c3d-1111-4222-8333-444455556666"
UID_B = "6f1b2c3d-9999-4aaa-8bbb-cccccccccccc"  # the same first 8 characters


def _row(name: str, uid: str, last_seen_ms: int = 1) -> KnownCluster:
    return KnownCluster(name, uid, 1, last_seen_ms)


def test_in_cluster_the_name_comes_from_the_kube_system_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RECORDER_CLUSTER", raising=False)
    unnamed = load_settings()

    def choose(stored: list[str], *known: KnownCluster, uid: str = UID_A) -> str:
        return choose_cluster(
            unnamed, None, stored, "db", uid=uid, known={k.name: k for k in known}
        )

    assert choose([]) == "cluster-6f1b2c3d"
    # A fleet database: a name of its own, not a refusal.
    assert choose(["eu-1", "us-2"], _row("eu-1", UID_B)) == "cluster-6f1b2c3d"
    # A single-cluster history from before keeps its name (and the UID is kept beside it)...
    assert choose(["default"]) == "default"
    # ... unless it is another cluster's.
    assert choose(["default"], _row("default", UID_B)) == "cluster-6f1b2c3d"
    # A name recorded beside this UID (e.g. given once with --cluster) is kept, the latest.
    assert choose(["x", "prod"], _row("prod", UID_A, 5), _row("old", UID_A, 2)) == "prod"
    # The short name is another cluster's: the whole UID.
    assert choose(["cluster-6f1b2c3d"], _row("cluster-6f1b2c3d", UID_B)) == (
        "cluster-6f1b2c3d-1111-4222-8333-444455556666"
    )
    # Without the UID: as before (default, or the refusal of a fleet's database).
    assert choose_cluster(unnamed, None, ["default"], "db") == "default"
    with pytest.raises(ConfigError, match="another cluster"):
        choose_cluster(unnamed, None, ["eu-1"], "db", known={"eu-1": _row("eu-1", UID_B)})


def test_a_name_recorded_beside_another_uid_is_refused() -> None:
    named = load_settings(cluster="prod")
    known = {"prod": _row("prod", UID_B)}
    assert choose_cluster(named, None, ["prod"], "db", uid=UID_B, known=known) == "prod"
    assert choose_cluster(named, None, [], "db", uid=UID_A) == "prod"
    message = (
        r"^db holds the history of cluster prod recorded from another cluster \(kube-system "
        rf"UID {UID_B}; this one's is {UID_A}\): pass another --cluster NAME"
    )
    with pytest.raises(ConfigError, match=message):
        choose_cluster(named, None, ["prod"], "db", uid=UID_A, known=known)
    # A context's name without the UID is not checked (nothing to compare).
    assert choose_cluster(named, "ctx", ["prod"], "db", known=known) == "prod"


@pytest.mark.parametrize(
    ("uid", "name"),
    [
        (UID_A, "cluster-6f1b2c3d"),
        ("ABCDEF01-2345", "cluster-abcdef01"),
        ("a", "cluster-a"),
        ("--x", "cluster-x"),
        ("x" * 128, "cluster-" + "x" * 8),
    ],
)
def test_a_uid_makes_a_label_value(uid: str, name: str) -> None:
    assert uid_name(uid, {}) == name
    assert len(uid_name(uid, {name: _row(name, "other")})) <= 63


@pytest.mark.parametrize(
    ("context", "value"),
    [
        ("kind-kind", "kind-kind"),
        ("gke_proj_europe-west1_prod", "gke_proj_europe-west1_prod"),
        ("user@cluster", "user-cluster"),
        ("-x-", "x"),
        ("x" * 80, "x" * 63),
        (":::", None),
        ("", None),
    ],
)
def test_a_context_name_becomes_a_label_value(context: str, value: str | None) -> None:
    assert label_value(context) == value


def _write(store: Store, cluster: str) -> None:
    samples = tuple(
        Sample(SeriesKey.for_container("x", "p", "c", cluster), T0 + i * 60_000, 30_000, 10**8, 1)
        for i in range(5)
    )
    store.write(Batch(Kind.CONTAINER, samples), now_ms=T0)


def _head_and_chunks(store: Store) -> dict[str, tuple[int, int]]:
    s, h, c = schema.series, schema.samples_head, schema.chunks
    out = {}
    with store.engine.connect() as conn:
        for cluster in ("a", "b"):
            mine = select(s.c.id).where(s.c.cluster == cluster).scalar_subquery()
            head = select(func.count()).select_from(h).where(h.c.series_id.in_(mine))
            chunks = select(func.count()).select_from(c).where(c.c.series_id.in_(mine))
            out[cluster] = (conn.execute(head).scalar_one(), conn.execute(chunks).scalar_one())
    return out


@pytest.mark.postgres
def test_one_recorder_maintains_every_clusters_blocks(postgres_url: str) -> None:
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        a.migrate()
        _write(a, "a")
        _write(b, "b")
        assert _head_and_chunks(a) == {"a": (5, 0), "b": (5, 0)}
        with a.maintenance_excluded(on_wait=lambda: None):  # a maintains: b skips its round
            assert b.maintain(now_ms=T0 + 2 * HOUR_MS, grace_ms=0).skipped
        assert _head_and_chunks(a) == {"a": (5, 0), "b": (5, 0)}
        report = a.maintain(now_ms=T0 + 2 * HOUR_MS, grace_ms=0)
        assert not report.skipped
        # a's round compacted b's samples of the shared block too: 1 container + 1 pod chunk.
        assert _head_and_chunks(a) == {"a": (0, 2), "b": (0, 2)}
    finally:
        a.close()
        b.close()


@pytest.mark.postgres
def test_two_clusters_starting_at_once_under_one_name_one_is_refused(postgres_url: str) -> None:
    """A second cluster records the name between this recorder's check and its insert: the
    insert fails on the name, the recorder decides again and is refused, nothing mixed."""
    store, rival = open_store(postgres_url), open_store(postgres_url)
    store.migrate()
    inserts = []

    def race(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CLUSTERS") and not inserts:
            inserts.append(statement)
            with rival.engine.begin() as other:
                record_identity(other, "prod", UID_B, T0)

    event.listen(store.engine, "before_cursor_execute", race)
    try:
        with pytest.raises(ConfigError, match=f"kube-system UID {UID_B}; this one's is {UID_A}"):
            store.own_cluster(load_settings(cluster="prod"), uid=UID_A, now_ms=T0)
        assert inserts
        with store.engine.connect() as conn:
            assert known_clusters(conn) == {"prod": KnownCluster("prod", UID_B, T0, T0)}
        # The rival's next start finds its row: same name, same UID, its last start moved on.
        assert store.own_cluster(load_settings(cluster="prod"), uid=UID_B, now_ms=T0 + 1) == "prod"
        with store.engine.connect() as conn:
            assert known_clusters(conn)["prod"].last_seen_ms == T0 + 1
    finally:
        event.remove(store.engine, "before_cursor_execute", race)
        store.close()
        rival.close()

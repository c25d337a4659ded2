"""Reads of the series dictionary (``recorder.store.series``) on SQLite and PostgreSQL: which
series of which kinds match each filter, their pods' labels (joined within their cluster), and
the newest head timestamp of each."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection

from recorder.domain import Batch, Kind, QueryKind, Sample, SeriesFilter, SeriesKey
from recorder.selectors import parse_label_selector
from recorder.store import Store, schema
from recorder.store.series import Series, newest_in_head, select_series, series_statement
from recorder.timeutil import HOUR_MS

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a block boundary
COMPACTED = T0 + 2 * HOUR_MS
"""When the first samples were compacted (pods' series exist from then on)."""

LABELS = {
    "east": {("shop", "web"): {"app": "web", "tier": "front"}, ("shop", "db"): {"app": "db"}},
    "west": {("shop", "web"): {"app": "web", "tier": "back"}},
}
CONTAINERS = {"east": [("web", "app"), ("db", "pg")], "west": [("web", "app")]}
NODES = {"east": "node-a", "west": "node-b"}


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store with, in clusters ``east`` and ``west``, the same pod ``shop/web`` (with
    different labels), ``shop/db`` in ``east`` only and a node each, compacted (so each pod has
    its statistics series)."""
    for cluster in ("east", "west"):
        containers = tuple(
            Sample(SeriesKey.for_container("shop", pod, c, cluster), T0, 15_000, 1, 1)
            for pod, c in CONTAINERS[cluster]
        )
        store.write(Batch(Kind.CONTAINER, containers, LABELS[cluster], cluster=cluster), now_ms=T0)
        node = Sample(SeriesKey.for_node(NODES[cluster], cluster), T0, 15_000, 1, 1)
        store.write(Batch(Kind.NODE, (node,), cluster=cluster), now_ms=T0)
    store.maintain(now_ms=COMPACTED, grace_ms=0)
    return store


def select(conn: Connection, kinds: tuple[Kind, ...], **where: object) -> dict[int, Series]:
    kind = QueryKind.NODE if kinds == (Kind.NODE,) else QueryKind.CONTAINER
    return select_series(conn, kinds, SeriesFilter(kind, **where))  # type: ignore[arg-type]


def names(found: dict[int, Series]) -> list[tuple[str, str, str, str, str]]:
    """(kind, cluster, node or namespace/pod, container, label "tier") of each, sorted."""
    return sorted(
        (
            s.kind.value,
            s.cluster,
            s.node or f"{s.namespace}/{s.pod}",
            s.container,
            (s.pod_labels or {}).get("tier", "-"),
        )
        for s in found.values()
    )


def test_series_of_the_kinds_asked_for_in_id_order(store: Store) -> None:
    with store.reading() as conn:
        nodes = select(conn, (Kind.NODE,))
        containers = select(conn, (Kind.CONTAINER,))
        both = select(conn, (Kind.CONTAINER, Kind.POD))
    assert names(nodes) == [
        ("node", "east", "node-a", "", "-"),
        ("node", "west", "node-b", "", "-"),
    ]
    assert all(s.pod_labels is None for s in nodes.values())  # a node has no pod labels
    assert names(containers) == [
        ("container", "east", "shop/db", "pg", "-"),
        ("container", "east", "shop/web", "app", "front"),
        ("container", "west", "shop/web", "app", "back"),
    ]
    # A pod's series carries its pod's labels too.
    assert names(both) == sorted(
        [
            *names(containers),
            ("pod", "east", "shop/db", "", "-"),
            ("pod", "east", "shop/web", "", "front"),
            ("pod", "west", "shop/web", "", "back"),
        ]
    )
    for found in (nodes, containers, both):
        assert list(found) == sorted(found)
        assert all(found[sid].id == sid for sid in found)
    only = next(s for s in containers.values() if s.pod == "db")
    assert (only.first_seen_ms, only.last_seen_ms) == (T0, T0)
    assert only.pod_labels == {"app": "db"}


@pytest.mark.parametrize(
    ("kinds", "where", "expected"),
    [
        ((Kind.NODE,), {"cluster": "west"}, [("node", "west", "node-b", "", "-")]),
        ((Kind.NODE,), {"node": "node-a"}, [("node", "east", "node-a", "", "-")]),
        ((Kind.NODE,), {"node": "node-a", "cluster": "west"}, []),
        (
            (Kind.CONTAINER,),
            {"cluster": "east"},
            [
                ("container", "east", "shop/db", "pg", "-"),
                ("container", "east", "shop/web", "app", "front"),
            ],
        ),
        ((Kind.CONTAINER,), {"namespace": "kube-system"}, []),
        (
            (Kind.CONTAINER,),
            {"pod": "web"},
            [
                ("container", "east", "shop/web", "app", "front"),
                ("container", "west", "shop/web", "app", "back"),
            ],
        ),
        ((Kind.CONTAINER,), {"container": "pg"}, [("container", "east", "shop/db", "pg", "-")]),
        (
            (Kind.CONTAINER, Kind.POD),
            {"namespace": "shop", "pod": "db"},
            [("container", "east", "shop/db", "pg", "-"), ("pod", "east", "shop/db", "", "-")],
        ),
    ],
)
def test_every_filter_narrows_the_series(
    store: Store, kinds: tuple[Kind, ...], where: dict[str, str], expected: list[tuple[str, ...]]
) -> None:
    with store.reading() as conn:
        assert names(select(conn, kinds, **where)) == expected


def test_the_selector_matches_the_labels_of_the_pod_in_the_series_cluster(store: Store) -> None:
    """``shop/web`` is in both clusters with different labels: each series is matched against
    its own cluster's."""
    with store.reading() as conn:
        front = select(
            conn, (Kind.CONTAINER, Kind.POD), selector=parse_label_selector("tier=front")
        )
        web = select(conn, (Kind.CONTAINER,), selector=parse_label_selector("app=web"))
        west = select(
            conn, (Kind.CONTAINER,), selector=parse_label_selector("app=web"), cluster="west"
        )
        untiered = select(conn, (Kind.CONTAINER,), selector=parse_label_selector("!tier"))
    assert names(front) == [
        ("container", "east", "shop/web", "app", "front"),
        ("pod", "east", "shop/web", "", "front"),
    ]
    assert names(web) == [
        ("container", "east", "shop/web", "app", "front"),
        ("container", "west", "shop/web", "app", "back"),
    ]
    assert names(west) == [("container", "west", "shop/web", "app", "back")]
    assert names(untiered) == [("container", "east", "shop/db", "pg", "-")]


def test_newest_in_head_is_each_found_series_newest_uncompacted_sample(store: Store) -> None:
    later = COMPACTED + 15_000
    web_east = SeriesKey.for_container("shop", "web", "app", "east")
    store.write(
        Batch(
            Kind.CONTAINER,
            (Sample(web_east, later, 15_000, 2, 2), Sample(web_east, later + 15_000, 15_000, 3, 3)),
            cluster="east",
        ),
        now_ms=later,
    )
    node_b = Sample(SeriesKey.for_node("node-b", "west"), later, 15_000, 2, 2)
    store.write(Batch(Kind.NODE, (node_b,), cluster="west"), now_ms=later)
    with store.reading() as conn:
        containers = select(conn, (Kind.CONTAINER,))
        nodes = select(conn, (Kind.NODE,))
        newest_containers = newest_in_head(conn, containers)
        newest_nodes = newest_in_head(conn, nodes)
        nothing = newest_in_head(conn, {})
    # last_seen_ms moves only at compaction; the head knows better.
    assert {s.last_seen_ms for s in containers.values()} == {T0}
    [web_id] = [sid for sid, s in containers.items() if (s.cluster, s.pod) == ("east", "web")]
    assert newest_containers == {web_id: later + 15_000}
    [node_id] = [sid for sid, s in nodes.items() if s.node == "node-b"]
    assert newest_nodes == {node_id: later}
    assert nothing == {}


@pytest.mark.parametrize(
    "where",
    [
        SeriesFilter(QueryKind.CONTAINER, namespace="ns-7", pod="pod-27", container="app"),
        SeriesFilter(QueryKind.POD, namespace="ns-7"),
        SeriesFilter(QueryKind.POD, namespaces=frozenset({"ns-7", "ns-8"})),
    ],
    ids=["container", "namespace", "readable-namespaces"],
)
def test_a_namespace_pod_or_container_is_looked_up_in_an_index(
    store: Store, where: SeriesFilter
) -> None:
    """Among 6,000 series of 20 namespaces, a query that names a namespace (or a set of them)
    finds its series through the (namespace, pod, container) index: the unique key starts
    with cluster, kind and node, so without it every series was read (24 ms of a 110 ms
    30-day container history at 200,000 series)."""
    s = schema.series
    rows = [
        {
            "cluster": "east",
            "kind": kind,
            "node": "",
            "namespace": f"ns-{n % 20}",
            "pod": f"pod-{n}",
            "container": "app" if kind == "container" else "",
            "first_seen_ms": T0,
            "last_seen_ms": T0,
        }
        for n in range(3_000)
        for kind in ("container", "pod")
    ]
    kinds = [Kind.POD, Kind.CONTAINER]
    with store.engine.begin() as conn:
        conn.execute(s.insert(), rows)
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql("ANALYZE series")
        sql = str(
            series_statement(kinds, where).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
        )
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        plan = "\n".join(str(row) for row in conn.exec_driver_sql(explain + sql))
        found = select_series(conn, kinds, where)
    assert "ix_series_namespace_pod_container" in plan, plan
    assert found and all(
        series.namespace in (where.namespaces or {where.namespace}) for series in found.values()
    )

"""The ``Store`` façade (``recorder.store.sql``) on real databases: a SQLite file and a
PostgreSQL database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from recorder.domain import (
    DEFAULT_CLUSTER,
    Batch,
    HistoryQuery,
    Kind,
    QueryKind,
    Resource,
    Sample,
    SeriesFilter,
    SeriesKey,
    SeriesPoints,
)
from recorder.errors import QueryError
from recorder.query import engine
from recorder.store import Store, open_store, schema, writer

WEB = SeriesKey.for_container("shop", "web", "app")
SIDE = SeriesKey.for_container("shop", "web", "sidecar")
NODE = SeriesKey.for_node("node-a")


def pods(*samples: Sample, labels: dict[str, str] | None = None) -> Batch:
    return Batch(Kind.CONTAINER, samples, {("shop", "web"): labels or {"app": "web"}})


def raw(
    store: Store,
    resource: Resource,
    kind: QueryKind,
    start: int,
    end: int,
    max_points: int = 100,
    **filters: str,
) -> list[SeriesPoints]:
    query = HistoryQuery(resource, SeriesFilter(kind, **filters), start, end)
    return engine.history(store, query, max_points=max_points).series


def head_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.samples_head)).scalar_one())


def test_write_then_read_back_exact_values(store: Store) -> None:
    result = store.write(
        pods(
            Sample(WEB, 1_000, 30_000, 1_500_000_000, 512 * 2**20),
            Sample(SIDE, 1_000, 30_000, 0, 10_043 * 1024),
            Sample(WEB, 31_000, 30_000, 7, 2**40 + 1),
        ),
        now_ms=40_000,
    )
    assert (result.written, result.skipped_duplicates) == (3, 0)
    cpu = raw(store, Resource.CPU, QueryKind.CONTAINER, 0, 100_000, 100, namespace="shop")
    assert [(dict(s.labels), s.points) for s in cpu] == [
        (
            {"cluster": DEFAULT_CLUSTER, "namespace": "shop", "pod": "web", "container": "app"},
            [(1_000, 1_500_000_000), (31_000, 7)],
        ),
        (
            {"cluster": DEFAULT_CLUSTER, "namespace": "shop", "pod": "web", "container": "sidecar"},
            [(1_000, 0)],
        ),
    ]
    assert [list(s.labels) for s in cpu] == [["cluster", "namespace", "pod", "container"]] * 2
    memory = raw(store, Resource.MEMORY, QueryKind.CONTAINER, 0, 100_000, 100, container="app")
    assert [s.points for s in memory] == [[(1_000, 512 * 2**20), (31_000, 2**40 + 1)]]


def test_same_poll_again_stores_nothing_and_survives_restart(database_url: str) -> None:
    batch = pods(Sample(WEB, 1_000, 30_000, 5, 6), Sample(SIDE, 1_000, 30_000, 7, 8))
    first = open_store(database_url)
    first.migrate()
    assert first.write(batch, now_ms=1).written == 2
    assert first.write(batch, now_ms=2).skipped_duplicates == 2
    first.close()
    second = open_store(database_url)  # a restart: the in-memory map is rebuilt from the db
    again = second.write(batch, now_ms=3)
    assert (again.written, again.skipped_duplicates) == (0, 2)
    newer = second.write(pods(Sample(WEB, 2_000, 30_000, 9, 10)), now_ms=4)
    assert newer.written == 1
    assert head_rows(second) == 3
    second.close()


def test_exact_duplicates_collapse_and_older_samples_are_stored(store: Store) -> None:
    result = store.write(
        pods(
            Sample(WEB, 2_000, 30_000, 1, 1),
            Sample(WEB, 2_000, 30_000, 1, 1),
            Sample(WEB, 1_000, 30_000, 2, 2),
        ),
        now_ms=1,
    )
    assert (result.written, result.skipped_duplicates) == (2, 1)
    again = store.write(pods(Sample(WEB, 2_000, 30_000, 1, 1)), now_ms=2)
    assert (again.written, again.skipped_duplicates) == (0, 1)
    assert head_rows(store) == 2
    # The same timestamp with other values is written; every read keeps the greater sample,
    # whichever arrived first.
    other = store.write(
        pods(Sample(WEB, 2_000, 30_000, 3, 0), Sample(WEB, 1_000, 30_000, 1, 9)), now_ms=3
    )
    assert (other.written, other.skipped_duplicates) == (2, 0)
    assert head_rows(store) == 4
    cpu = raw(store, Resource.CPU, QueryKind.CONTAINER, 0, 10_000, container="app")
    memory = raw(store, Resource.MEMORY, QueryKind.CONTAINER, 0, 10_000, container="app")
    assert [s.points for s in cpu] == [[(1_000, 2), (2_000, 3)]]
    assert [s.points for s in memory] == [[(1_000, 2), (2_000, 0)]]


def test_a_future_stamped_sample_does_not_block_its_series(database_url: str) -> None:
    """A node with a wrong clock stamps one sample in 2100: the series keeps recording, also
    across a restart (the future row is the newest one the restarted writer finds)."""
    future = 4_102_444_800_000  # 2100-01-01
    first = open_store(database_url)
    first.migrate()
    assert first.write(pods(Sample(WEB, future, 1, 9, 9)), now_ms=1).written == 1
    assert first.write(pods(Sample(WEB, 1_000, 1, 1, 1)), now_ms=2).written == 1
    repeated = first.write(pods(Sample(WEB, 1_000, 1, 1, 1)), now_ms=3)  # a poll too soon
    assert (repeated.written, repeated.skipped_duplicates) == (0, 1)
    assert first.write(pods(Sample(WEB, 2_000, 1, 2, 2)), now_ms=4).written == 1
    first.close()
    restarted = open_store(database_url)
    assert restarted.write(pods(Sample(WEB, 3_000, 1, 3, 3)), now_ms=5).written == 1
    assert restarted.write(pods(Sample(WEB, future, 1, 9, 9)), now_ms=6).written == 0
    points = raw(restarted, Resource.CPU, QueryKind.CONTAINER, 0, future, container="app")
    assert points[0].points == [(1_000, 1), (2_000, 2), (3_000, 3), (future, 9)]
    restarted.close()


def test_a_clock_stepped_back_is_stored(store: Store) -> None:
    store.write(Batch(Kind.NODE, (Sample(NODE, 10_000, 1, 10, 10),)), now_ms=1)
    stepped_back = Batch(Kind.NODE, (Sample(NODE, 9_000, 1, 9, 9), Sample(NODE, 9_500, 1, 8, 8)))
    result = store.write(stepped_back, now_ms=2)
    assert (result.written, result.skipped_duplicates) == (2, 0)
    assert store.write(stepped_back, now_ms=3).written == 1  # 9_000 again is not the last one
    found = raw(store, Resource.CPU, QueryKind.NODE, 0, 20_000, node="node-a")
    assert found[0].points == [(9_000, 9), (9_500, 8), (10_000, 10)]


def test_series_are_dictionary_encoded_once(store: Store) -> None:
    for ts in (1_000, 2_000, 3_000):
        store.write(pods(Sample(WEB, ts, 1, 1, 1)), now_ms=ts)
        store.write(Batch(Kind.NODE, (Sample(NODE, ts, 1, 1, 1),)), now_ms=ts)
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.series.c.kind, schema.series.c.first_seen_ms)).all()
    assert sorted(rows) == [("container", 1_000), ("node", 1_000)]


def test_pod_labels_are_kept_and_updated(store: Store) -> None:
    store.write(pods(Sample(WEB, 1_000, 1, 1, 1), labels={"app": "web", "tier": ""}), now_ms=1)
    store.write(pods(Sample(WEB, 2_000, 1, 1, 1), labels={"app": "web", "tier": "front"}), now_ms=2)
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.pod_labels)).all()
    assert [(r.namespace, r.pod, r.labels_json, r.updated_ms) for r in rows] == [
        ("shop", "web", '{"app":"web","tier":"front"}', 2)
    ]


def test_labels_of_more_pods_than_one_insert_part_are_all_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The labels are upserted a part at a time (memory at a large cluster's first poll):
    every pod's, new and changed, lands, whatever the part size."""
    monkeypatch.setattr(writer, "_INSERT_CHUNK", 7)
    keys = [SeriesKey.for_container("shop", f"web-{i}", "app") for i in range(30)]

    def batch(ts: int, changed: int) -> Batch:
        labels = {
            ("shop", k.pod): {"app": "web", "v": str(ts if i < changed else 0)}
            for i, k in enumerate(keys)
        }
        return Batch(Kind.CONTAINER, tuple(Sample(k, ts, 1, 1, 1) for k in keys), labels)

    store.write(batch(1_000, 0), now_ms=1)
    store.write(batch(2_000, 16), now_ms=2)  # 16 pods' labels change: three parts
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.pod_labels.c.pod, schema.pod_labels.c.labels_json)).all()
    expected = {f"web-{i}": f'{{"app":"web","v":"{2_000 if i < 16 else 0}"}}' for i in range(30)}
    assert dict(rows) == expected


def test_time_range_is_inclusive_and_filters_apply(store: Store) -> None:
    store.write(Batch(Kind.NODE, tuple(Sample(NODE, t, 1, t, t) for t in (10, 20, 30))), now_ms=1)
    found = raw(store, Resource.CPU, QueryKind.NODE, 20, 30, 10, node="node-a")
    assert found[0].points == [(20, 20), (30, 30)]
    assert raw(store, Resource.CPU, QueryKind.NODE, 0, 99, 9, node="other") == []
    assert raw(store, Resource.CPU, QueryKind.CONTAINER, 0, 99, 9) == []


def test_responses_are_bounded(store: Store) -> None:
    store.write(Batch(Kind.NODE, tuple(Sample(NODE, t, 1, t, t) for t in range(1, 12))), now_ms=1)
    with pytest.raises(QueryError, match="more than 10 points"):
        raw(store, Resource.CPU, QueryKind.NODE, 0, 100, 10)


def test_write_failure_rolls_back_and_recovers(store: Store) -> None:
    store.write(pods(Sample(WEB, 1_000, 1, 1, 1)), now_ms=1)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE samples_head")
    from recorder.errors import StoreError

    with pytest.raises(StoreError, match="writing"):
        store.write(pods(Sample(WEB, 2_000, 1, 1, 1), Sample(SIDE, 2_000, 1, 1, 1)), now_ms=2)
    with store.engine.connect() as conn:  # the new series row rolled back with the samples
        names = conn.execute(select(schema.series.c.container)).scalars().all()
    assert names == ["app"]


def test_series_created_by_another_writer_are_found(database_url: str) -> None:
    first = open_store(database_url)
    first.migrate()
    second = open_store(database_url)
    late = SeriesKey.for_container("shop", "late", "app")
    # The second writer knows series id 10; then another writer's transaction, which had taken
    # the lower id 5, commits the series it is about to write (PostgreSQL sequences allow this).
    with first.engine.begin() as conn:
        conn.execute(
            schema.series.insert(),
            [
                {
                    "id": 10,
                    "cluster": DEFAULT_CLUSTER,
                    "kind": "container",
                    "node": "",
                    "namespace": "shop",
                    "pod": "web",
                    "container": "app",
                    "first_seen_ms": 1,
                    "last_seen_ms": 1,
                },
            ],
        )
    assert second.write(pods(Sample(WEB, 1_000, 1, 1, 1)), now_ms=1).written == 1
    with first.engine.begin() as conn:
        conn.execute(
            schema.series.insert(),
            [
                {
                    "id": 5,
                    "cluster": DEFAULT_CLUSTER,
                    "kind": "container",
                    "node": "",
                    "namespace": "shop",
                    "pod": "late",
                    "container": "app",
                    "first_seen_ms": 1,
                    "last_seen_ms": 1,
                },
            ],
        )
    batch = Batch(Kind.CONTAINER, (Sample(late, 2_000, 1, 7, 8), Sample(WEB, 2_000, 1, 2, 2)))
    assert second.write(batch, now_ms=2).written == 2
    with second.engine.connect() as conn:
        rows = conn.execute(
            select(schema.samples_head.c.series_id, schema.samples_head.c.cpu_nanocores).order_by(
                schema.samples_head.c.ts_ms, schema.samples_head.c.series_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [(10, 1), (5, 7), (10, 2)]
    first.close()
    second.close()


def test_series_list_sees_what_another_process_wrote_since(database_url: str) -> None:
    """The service reads with its own store while the worker writes with another: the last
    sample of a series, not yet compacted, still counts for ``last seen`` and ``start``."""
    writer = open_store(database_url)
    writer.migrate()
    reader = open_store(database_url)
    try:
        for ts in (60_000, 120_000, 1_200_000):
            writer.write(pods(Sample(WEB, ts, 1, 1, 1)), now_ms=ts)
        where = SeriesFilter(QueryKind.CONTAINER, namespace="shop")
        [info] = engine.list_series(reader, where, limit=10)
        assert (info.first_seen_ms, info.last_seen_ms) == (60_000, 1_200_000)
        assert [
            i.last_seen_ms for i in engine.list_series(reader, where, limit=10, start_ms=900_000)
        ] == [1_200_000]
        assert engine.list_series(reader, where, limit=10, start_ms=1_200_001) == []
    finally:
        writer.close()
        reader.close()

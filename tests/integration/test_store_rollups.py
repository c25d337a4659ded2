"""Day-level rollups answer whole days of statistics queries, and stay true to the chunks."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from recorder.domain import (
    Agg,
    Batch,
    HistoryQuery,
    Kind,
    QueryKind,
    Resource,
    Sample,
    SeriesFilter,
    SeriesKey,
)
from recorder.query import engine
from recorder.stats.quantiles import scalar_merge
from recorder.stats.sketch import RELATIVE_ACCURACY, exact_quantile
from recorder.store import Store, open_store, rollups, schema

DAY = 86_400_000
D0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
STEP = 600_000
KEYS = [SeriesKey.for_container("ns", f"p{i}", "c") for i in range(3)]


def samples() -> list[Sample]:
    rng = random.Random(5)
    return [
        Sample(k, ts, 30_000, rng.randrange(0, 10**9), rng.randrange(1, 10**6) * 4096)
        for ts in range(D0, D0 + 3 * DAY, STEP)
        for k in KEYS
        if rng.random() > 0.05
    ]


SAMPLES = samples()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    store.migrate()
    for ts in range(D0, D0 + 3 * DAY, STEP):
        batch = tuple(s for s in SAMPLES if s.timestamp_ms == ts)
        store.write(Batch(Kind.CONTAINER, batch), now_ms=ts)
    report = store.maintain(now_ms=D0 + 3 * DAY + 3_600_000, grace_ms=600_000)
    assert report.compaction.rollup_days == 3
    yield store
    store.close()


def daily(
    store: Store,
    agg: Agg,
    start: int = D0,
    end: int = D0 + 3 * DAY - 1,
    kind: QueryKind = QueryKind.CONTAINER,
) -> dict:
    """Per pod, its daily ``agg``: of its one container, or (``kind=pod``) of the pod's own
    series, which equals it here (each pod has one container)."""
    query = HistoryQuery(Resource.CPU, SeriesFilter(kind), start, end, DAY, agg)
    return {s.labels["pod"]: s.points for s in engine.history(store, query, max_points=1000).series}


def reference(agg: Agg, extra: list[Sample] = ()) -> dict:  # type: ignore[assignment]
    out: dict[str, list] = {}
    for key in KEYS:
        for day in range(D0, D0 + 3 * DAY, DAY):
            values = [
                s.cpu_nanocores
                for s in sorted([*SAMPLES, *extra], key=lambda s: s.timestamp_ms)
                if s.key == key and day <= s.timestamp_ms < day + DAY
            ]
            exact = {
                Agg.AVG: Fraction(sum(values), len(values)),
                Agg.MAX: max(values),
                Agg.LAST: values[-1],
                Agg.COUNT: len(values),
                Agg.P95: exact_quantile(values, 0.95),
                Agg.STDDEV: statistics.pstdev(values),
            }[agg]
            out.setdefault(key.pod, []).append((day, exact))
    return out


def test_rollups_hold_each_days_statistics(store: Store) -> None:
    """One rollup per series per day: each container's, and each pod's own (its containers'
    sum; one container each here, so the same counts)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(schema.rollups, schema.series.c.kind, schema.series.c.pod).join(
                schema.series, schema.series.c.id == schema.rollups.c.series_id
            )
        ).all()
    assert sorted((r.kind, r.pod, r.day_start_ms) for r in rows) == sorted(
        (kind, key.pod, day)
        for kind in ("container", "pod")
        for key in KEYS
        for day in range(D0, D0 + 3 * DAY, DAY)
    )
    for row in rows:
        day = [s for s in SAMPLES if row.day_start_ms <= s.timestamp_ms < row.day_start_ms + DAY]
        assert row.count == len([s for s in day if s.key.pod == row.pod])


def _assert_stddev(found: dict, expected: dict) -> None:
    """Exact from the stored sums of squares, up to float rounding."""
    assert found.keys() == expected.keys()
    for pod, points in expected.items():
        assert [day for day, _ in found[pod]] == [day for day, _ in points]
        assert [v for _, v in found[pod]] == pytest.approx([v for _, v in points], rel=1e-9)


def test_daily_statistics_come_from_rollups(store: Store) -> None:
    for kind in (QueryKind.CONTAINER, QueryKind.POD):
        for agg in (Agg.AVG, Agg.MAX, Agg.LAST, Agg.COUNT):
            assert daily(store, agg, kind=kind) == reference(agg), (kind, agg)
        _assert_stddev(daily(store, Agg.STDDEV, kind=kind), reference(Agg.STDDEV))
    # The chunks of the middle day can go: its rollups answer alone.
    with store.engine.begin() as conn:
        conn.execute(
            delete(schema.chunks).where(
                schema.chunks.c.block_start_ms >= D0 + DAY,
                schema.chunks.c.block_start_ms < D0 + 2 * DAY,
            )
        )
    assert daily(store, Agg.AVG) == reference(Agg.AVG)
    assert daily(store, Agg.MAX, kind=QueryKind.POD) == reference(Agg.MAX)
    _assert_stddev(daily(store, Agg.STDDEV), reference(Agg.STDDEV))
    found = daily(store, Agg.P95)
    for pod, points in reference(Agg.P95).items():
        for (day, value), (got_day, got) in zip(points, found[pod], strict=True):
            assert day == got_day and abs(got - value) <= RELATIVE_ACCURACY * value


def test_partial_days_and_summaries_still_match(store: Store) -> None:
    start, end = D0 + 5 * 3_600_000, D0 + 2 * DAY + 7 * 3_600_000
    query = HistoryQuery(
        Resource.MEMORY, SeriesFilter(QueryKind.CONTAINER), start, end, DAY, Agg.SUM
    )
    found = {s.labels["pod"]: s.points for s in engine.history(store, query, max_points=100).series}
    for key in KEYS:
        expected = []
        for day in range(D0, D0 + 3 * DAY, DAY):
            values = [
                s.memory_bytes
                for s in SAMPLES
                if s.key == key and max(day, start) <= s.timestamp_ms <= min(day + DAY - 1, end)
            ]
            expected.append((day, sum(values)))
        assert found[key.pod] == expected
    (group,) = engine.summarize(
        store, SeriesFilter(QueryKind.CONTAINER), "namespace", D0, D0 + 3 * DAY, max_groups=10
    )
    assert group.cpu is not None
    assert group.cpu.samples == len(SAMPLES)
    assert group.cpu.integral == pytest.approx(sum(s.cpu_nanocores for s in SAMPLES) * STEP / 1000)


def namespace_rollups(
    store: Store,
) -> dict[tuple[str, str, str, int], tuple[int, int, bytes, bytes]]:
    n = schema.namespace_rollups
    with store.engine.connect() as conn:
        return {
            (r.cluster, r.kind, r.namespace, r.day_start_ms): (
                r.series,
                r.count,
                r.cpu_sketch,
                r.memory_sketch,
            )
            for r in conn.execute(select(n))
        }


def merged_by_namespace(
    store: Store,
) -> dict[tuple[str, str, str, int], tuple[int, int, bytes, bytes]]:
    """What the namespace rollups must hold: each day's rollups per cluster, kind and
    namespace, counted and merged one sketch after another."""
    r, s = schema.rollups, schema.series
    found: dict[tuple[str, str, str, int], list[Any]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(
            select(r, s.c.cluster, s.c.kind, s.c.namespace).join(s, s.c.id == r.c.series_id)
        ):
            key = (row.cluster, row.kind, row.namespace, row.day_start_ms)
            found.setdefault(key, []).append(row)
    return {
        key: (
            len(rows),
            sum(row.count for row in rows),
            scalar_merge([row.cpu_sketch for row in rows]),
            scalar_merge([row.memory_sketch for row in rows]),
        )
        for key, rows in found.items()
    }


def test_namespace_rollups_merge_each_days_rollups(store: Store) -> None:
    found = namespace_rollups(store)
    assert sorted(found) == [
        ("default", kind, "ns", day)
        for kind in ("container", "pod")
        for day in (D0, D0 + DAY, D0 + 2 * DAY)
    ]
    assert found == merged_by_namespace(store)
    assert found[("default", "container", "ns", D0)][:2] == (
        3,
        len([s for s in SAMPLES if s.timestamp_ms < D0 + DAY]),
    )


def test_namespace_rollups_of_days_without_them_and_of_dropped_days(store: Store) -> None:
    before = namespace_rollups(store)
    with store.engine.begin() as conn:
        conn.execute(delete(schema.namespace_rollups))
    # A few days per round, newest first (days rolled up before namespace rollups existed).
    rollups.build(store.engine, D0 + 3 * DAY, [], backfill_days=2)
    assert {key[3] for key in namespace_rollups(store)} == {D0 + DAY, D0 + 2 * DAY}
    assert rollups.build(store.engine, D0 + 3 * DAY, []) == 0
    assert namespace_rollups(store) == before
    # Retention dropped the first day's rollups: its namespace rollups go with the next round.
    with store.engine.begin() as conn:
        conn.execute(delete(schema.rollups).where(schema.rollups.c.day_start_ms == D0))
    rollups.build(store.engine, D0 + 3 * DAY, [])
    assert namespace_rollups(store) == {k: v for k, v in before.items() if k[3] != D0}
    with store.engine.begin() as conn:  # nothing left to roll up again either
        conn.execute(delete(schema.rollups))
        conn.execute(delete(schema.chunks))
    assert rollups.build(store.engine, D0 + 3 * DAY, []) == 0
    assert namespace_rollups(store) == {}


def test_totals_are_exact_past_64_bits(store: Store) -> None:
    r = schema.rollups
    with store.engine.begin() as conn:
        sid = conn.execute(select(r.c.series_id).limit(1)).scalar_one()
        conn.execute(r.update().where(r.c.series_id == sid).values(cpu_sum=2**63 - 5))
        (totals,) = rollups.read_totals(conn, [sid], D0, D0 + 3 * DAY)
        found = conn.execute(
            select(func.sum(r.c.count), func.count()).where(r.c.series_id == sid)
        ).one()
    assert totals.cpu_total == 3 * (2**63 - 5)
    assert (totals.samples, totals.rollups) == (found[0], found[1]) == (totals.samples, 3)
    assert totals.interval_ms == STEP


def test_a_late_block_rebuilds_its_days_rollup(store: Store) -> None:
    late = Sample(KEYS[0], D0 + DAY + 1, 30_000, 5 * 10**9, 4096)  # a new maximum, day 2
    with store.engine.begin() as conn:
        sid = conn.execute(
            select(schema.series.c.id).where(
                schema.series.c.pod == "p0", schema.series.c.kind == Kind.CONTAINER.value
            )
        ).scalar_one()
        store.head.append(conn, [(late.timestamp_ms, sid, 30_000, late.cpu_nanocores, 4096)])
    report = store.maintain(now_ms=D0 + 3 * DAY + 3_600_000, grace_ms=600_000)
    assert report.compaction.blocks == 1 and report.compaction.rollup_days == 1
    assert daily(store, Agg.MAX) == reference(Agg.MAX, [late])
    assert daily(store, Agg.MAX, kind=QueryKind.POD) == reference(Agg.MAX, [late])  # pod's too
    with store.engine.connect() as conn:  # rebuilt, not added: 3 days of 3 containers, 3 pods
        assert conn.execute(select(func.count()).select_from(schema.rollups)).scalar_one() == 18
    assert namespace_rollups(store) == merged_by_namespace(store)  # rebuilt with them


def test_rollups_outlive_block_statistics(database_url: str) -> None:
    from recorder.store.retention import RetentionPolicy

    store = open_store(
        database_url,
        retention=RetentionPolicy(
            full_resolution_ms=DAY, statistics_ms=2 * DAY, rollups_ms=9 * DAY
        ),
    )
    store.migrate()
    for ts in range(D0, D0 + 3 * DAY, STEP):
        store.write(
            Batch(Kind.CONTAINER, tuple(s for s in SAMPLES if s.timestamp_ms == ts)), now_ms=0
        )
    report = store.maintain(now_ms=D0 + 8 * DAY, grace_ms=0)
    assert report.compaction.rollup_days == 3
    # Every hourly block of the 3 days: each container's chunk and each pod's.
    assert report.retention.chunks_deleted == 3 * 24 * 2 * len(KEYS)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.chunks)).scalar_one() == 0
    assert daily(store, Agg.MAX) == reference(Agg.MAX)  # the days are still answered
    assert daily(store, Agg.MAX, kind=QueryKind.POD) == reference(Agg.MAX)
    _assert_stddev(daily(store, Agg.STDDEV), reference(Agg.STDDEV))
    gone = store.maintain(now_ms=D0 + 12 * DAY + 1, grace_ms=0)
    # The containers' and the pods' rollups go, then their series, with nothing left.
    assert gone.retention.rollups_deleted == 3 * 2 * len(KEYS)
    assert gone.retention.series_deleted == 2 * len(KEYS)
    assert daily(store, Agg.MAX) == {}
    assert daily(store, Agg.MAX, kind=QueryKind.POD) == {}
    store.close()

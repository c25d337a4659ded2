"""Day-level rollups answer whole days of statistics queries, and stay true to the chunks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction

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
from recorder.stats.sketch import RELATIVE_ACCURACY, exact_quantile
from recorder.store import Store, open_store, schema

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


def daily(store: Store, agg: Agg, start: int = D0, end: int = D0 + 3 * DAY - 1) -> dict:
    query = HistoryQuery(Resource.CPU, SeriesFilter(QueryKind.CONTAINER), start, end, DAY, agg)
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
            }[agg]
            out.setdefault(key.pod, []).append((day, exact))
    return out


def test_rollups_hold_each_days_statistics(store: Store) -> None:
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.rollups)).all()
    assert len(rows) == 3 * len(KEYS)
    for row in rows:
        day = [s for s in SAMPLES if row.day_start_ms <= s.timestamp_ms < row.day_start_ms + DAY]
        assert row.count == len([s for s in day if s.key.pod == _pod(store, row.series_id)])


def _pod(store: Store, series_id: int) -> str:
    with store.engine.connect() as conn:
        return str(
            conn.execute(
                select(schema.series.c.pod).where(schema.series.c.id == series_id)
            ).scalar_one()
        )


def test_daily_statistics_come_from_rollups(store: Store) -> None:
    for agg in (Agg.AVG, Agg.MAX, Agg.LAST, Agg.COUNT):
        assert daily(store, agg) == reference(agg)
    # The chunks of the middle day can go: its rollups answer alone.
    with store.engine.begin() as conn:
        conn.execute(
            delete(schema.chunks).where(
                schema.chunks.c.block_start_ms >= D0 + DAY,
                schema.chunks.c.block_start_ms < D0 + 2 * DAY,
            )
        )
    assert daily(store, Agg.AVG) == reference(Agg.AVG)
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


def test_a_late_block_rebuilds_its_days_rollup(store: Store) -> None:
    late = Sample(KEYS[0], D0 + DAY + 1, 30_000, 5 * 10**9, 4096)  # a new maximum, day 2
    with store.engine.begin() as conn:
        sid = conn.execute(
            select(schema.series.c.id).where(schema.series.c.pod == "p0")
        ).scalar_one()
        store.head.append(conn, [(late.timestamp_ms, sid, 30_000, late.cpu_nanocores, 4096)])
    report = store.maintain(now_ms=D0 + 3 * DAY + 3_600_000, grace_ms=600_000)
    assert report.compaction.blocks == 1 and report.compaction.rollup_days == 1
    assert daily(store, Agg.MAX) == reference(Agg.MAX, [late])
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.rollups)).scalar_one() == 9


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
    assert report.retention.chunks_deleted == 3 * 24 * len(KEYS)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.chunks)).scalar_one() == 0
    assert daily(store, Agg.MAX) == reference(Agg.MAX)  # the days are still answered
    gone = store.maintain(now_ms=D0 + 12 * DAY + 1, grace_ms=0)
    assert gone.retention.rollups_deleted == 3 * len(KEYS)
    assert gone.retention.series_deleted == len(KEYS)
    assert daily(store, Agg.MAX) == {}
    store.close()

"""The query layer end to end on both databases: one dedup winner on every read path before
and after compaction, pods' statistics beyond full-resolution retention, stddev and p75 at
every tier, and the summary's avg over the time a group was covered."""

from __future__ import annotations

import math
import statistics
import tracemalloc
from collections.abc import Iterator

import pytest
from sqlalchemy import select

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
    Tier,
)
from recorder.errors import QueryError
from recorder.query import engine
from recorder.stats.sketch import RELATIVE_ACCURACY, exact_quantile
from recorder.store import Store, open_store, schema, series
from recorder.timeutil import DAY_MS, HOUR_MS, MINUTE_MS
from tests.retention_support import expire_full_resolution

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a day boundary
APP = SeriesKey.for_container("shop", "web", "app")
SIDE = SeriesKey.for_container("shop", "web", "sidecar")


@pytest.fixture
def second(database_url: str, store: Store) -> Iterator[Store]:
    """Another writer on the same database (a second replica)."""
    other = open_store(database_url)
    yield other
    other.close()


def write(store: Store, *samples: Sample) -> None:
    store.write(Batch(Kind.CONTAINER, samples), now_ms=samples[-1].timestamp_ms)


def every_read(store: Store, at_ms: int) -> dict[str, object]:
    """The app container's CPU at ``at_ms`` as every read path answers it."""
    start, end = at_ms - at_ms % HOUR_MS, at_ms - at_ms % HOUR_MS + HOUR_MS - 1
    app = SeriesFilter(QueryKind.CONTAINER, namespace="shop", pod="web", container="app")
    pod = SeriesFilter(QueryKind.POD, namespace="shop", pod="web")

    def history(where: SeriesFilter, step: int | None, agg: Agg = Agg.MAX) -> object:
        result = engine.history(
            store, HistoryQuery(Resource.CPU, where, start, end, step, agg), max_points=10**5
        )
        (series,) = result.series
        if step is None:
            return dict(series.points)[at_ms]
        return max(v for _, v in series.points)

    (summary,) = engine.summarize(store, app, "container", start, end, max_groups=10)
    (row,) = engine.top(store, pod, start, end, Agg.MAX)
    assert summary.cpu is not None
    return {
        "raw": history(app, None),
        "raw buckets": history(app, MINUTE_MS),
        "statistics": history(app, HOUR_MS),
        "pod raw": history(pod, None),
        "pod statistics": history(pod, HOUR_MS),
        "summary max": summary.cpu.max,
        "top pod max": row.cpu,
    }


def expect(app_cpu: int, sidecar_cpu: int) -> dict[str, object]:
    return {
        "raw": app_cpu,
        "raw buckets": app_cpu,
        "statistics": app_cpu,
        "pod raw": app_cpu + sidecar_cpu,
        "pod statistics": app_cpu + sidecar_cpu,
        "summary max": app_cpu,
        "top pod max": app_cpu + sidecar_cpu,
    }


def test_one_winner_for_a_duplicate_on_every_read_path_before_and_after_compaction(
    store: Store, second: Store
) -> None:
    t = T0 + 10 * MINUTE_MS
    write(store, Sample(SIDE, t, 15_000, 7, 1))
    # Two writers, the same (series, timestamp), other values: the greater one wins, whoever
    # wrote first.
    write(second, Sample(APP, t, 15_000, 300, 1))
    write(store, Sample(APP, t, 15_000, 100, 1))
    assert every_read(store, t) == expect(300, 7)
    store.maintain(now_ms=T0 + 2 * HOUR_MS, grace_ms=0)
    assert every_read(store, t) == expect(300, 7)
    # Late, after compaction: a losing duplicate changes nothing, a winning one wins, before
    # and after the block is compacted again.
    write(second, Sample(APP, t, 15_000, 200, 1))
    assert every_read(store, t) == expect(300, 7)
    write(second, Sample(APP, t, 15_000, 500, 1))
    assert every_read(store, t) == expect(500, 7)
    store.maintain(now_ms=T0 + 3 * HOUR_MS, grace_ms=0)
    assert every_read(store, t) == expect(500, 7)
    with store.engine.connect() as conn:
        head_rows = conn.execute(schema.samples_head.select()).all()
    assert head_rows == []


def test_the_same_writer_keeps_a_greater_duplicate_and_older_samples(store: Store) -> None:
    t = T0 + 10 * MINUTE_MS
    write(store, Sample(SIDE, t, 15_000, 0, 1), Sample(APP, t, 15_000, 100, 1))
    write(store, Sample(APP, t, 15_000, 300, 1))  # not skipped: it may be the winner
    write(store, Sample(APP, t, 15_000, 300, 1))  # identical: skipped
    write(store, Sample(APP, t - 60_000, 15_000, 42, 1))  # older than the newest: kept
    result = engine.history(
        store,
        HistoryQuery(
            Resource.CPU,
            SeriesFilter(QueryKind.CONTAINER, container="app"),
            T0,
            T0 + HOUR_MS,
        ),
        max_points=100,
    )
    assert [s.points for s in result.series] == [[(t - 60_000, 42), (t, 300)]]
    assert every_read(store, t) == expect(300, 0)


def pod_samples(hours: int) -> list[Sample]:
    """Two containers out of phase: the pod's peak is far below the sum of their peaks."""
    out = []
    for i in range(hours * 60):
        ts = T0 + i * MINUTE_MS
        app = 1_000_000 * (1 + i % 10)
        side = 1_000_000 * (11 - i % 10)
        out += [Sample(APP, ts, 60_000, app, 2 * app), Sample(SIDE, ts, 60_000, side, side)]
    return out


def test_pod_max_beyond_full_resolution_retention_equals_the_reference(
    database_url: str, store: Store
) -> None:
    samples = pod_samples(hours=3)
    write(store, *samples)
    expire_full_resolution(database_url, now_ms=T0 + 8 * HOUR_MS)
    with store.engine.connect() as conn:
        payloads = conn.execute(
            schema.chunks.select().where(schema.chunks.c.payload.is_not(None))
        ).all()
    assert payloads == []  # every sample has expired: only statistics are left
    sums: dict[int, int] = {}
    for s in samples:
        sums[s.timestamp_ms] = sums.get(s.timestamp_ms, 0) + s.cpu_nanocores
    pod = SeriesFilter(QueryKind.POD, namespace="shop", pod="web")
    for agg in (Agg.MAX, Agg.MIN, Agg.AVG, Agg.STDDEV, Agg.P75):
        result = engine.history(
            store,
            HistoryQuery(Resource.CPU, pod, T0, T0 + 3 * HOUR_MS - 1, HOUR_MS, agg),
            max_points=100,
        )
        assert result.tier is Tier.STATISTICS
        (series,) = result.series
        assert series.labels == {"cluster": "default", "namespace": "shop", "pod": "web"}
        assert len(series.points) == 3
        for bucket, value in series.points:
            values = [v for ts, v in sums.items() if bucket <= ts < bucket + HOUR_MS]
            if agg is Agg.MAX:
                assert value == max(values) == 12_000_000  # not 10M + 10M
            elif agg is Agg.MIN:
                assert value == min(values)
            elif agg is Agg.AVG:
                assert value == statistics.mean(values)
            elif agg is Agg.STDDEV:
                assert value == pytest.approx(statistics.pstdev(values), rel=1e-9, abs=1e-9)
            else:
                assert math.isclose(
                    float(value), exact_quantile(values, 0.75), rel_tol=RELATIVE_ACCURACY
                )
    (row,) = engine.top(store, pod, T0, T0 + 3 * HOUR_MS - 1, Agg.MAX)
    assert row.cpu == 12_000_000


def test_stddev_and_p75_at_every_tier(database_url: str, store: Store) -> None:
    samples = [
        Sample(APP, T0 + i * 5 * MINUTE_MS, 60_000, (i * 7919) % 1_000_003, i)
        for i in range(2 * 24 * 12)  # two days, every 5 minutes
    ]
    write(store, *samples)
    store.maintain(now_ms=T0 + 3 * DAY_MS, grace_ms=0)  # chunks and the two days' rollups
    with store.engine.connect() as conn:
        assert len(conn.execute(schema.rollups.select()).all()) == 2 * 2  # app and its pod
    values = [s.cpu_nanocores for s in samples]
    app = SeriesFilter(QueryKind.CONTAINER, container="app")
    for step, tier in (
        (5 * MINUTE_MS, Tier.RAW),
        (HOUR_MS, Tier.STATISTICS),
        (DAY_MS, Tier.STATISTICS),
    ):
        for agg in (Agg.STDDEV, Agg.P75):
            result = engine.history(
                store,
                HistoryQuery(Resource.CPU, app, T0, T0 + 2 * DAY_MS - 1, step, agg),
                max_points=10**5,
            )
            assert result.tier is tier
            (series,) = result.series
            for bucket, value in series.points:
                inside = [
                    s.cpu_nanocores for s in samples if bucket <= s.timestamp_ms < bucket + step
                ]
                if agg is Agg.STDDEV:
                    assert value == pytest.approx(statistics.pstdev(inside), rel=1e-9, abs=1e-9)
                elif tier is Tier.RAW:
                    assert value == exact_quantile(inside, 0.75)
                else:
                    assert math.isclose(
                        float(value), exact_quantile(inside, 0.75), rel_tol=RELATIVE_ACCURACY
                    )
    assert len(values) == 576


# --- summary: avg over the time the group had samples --------------------------------------

EVERY = 30_000
HALF = T0 + HOUR_MS
WINDOW = (T0, T0 + 2 * HOUR_MS)


def run(key: SeriesKey, start: int, end: int, base: int) -> list[Sample]:
    """Samples 30 s apart in ``[start, end)``, their CPU varying around ``base``."""
    return [
        Sample(key, ts, EVERY, base + 1_000 * (i % 7), 2**20 * (1 + i % 3))
        for i, ts in enumerate(range(start, end, EVERY))
    ]


COVERAGE_CASES = {
    # namespace: its samples in the two-hour window, each case covering its first half
    "half": run(SeriesKey.for_container("half", "web", "app"), T0, HALF, 10**8),
    "pair": run(SeriesKey.for_container("pair", "p", "app"), T0, HALF, 10**8)
    + run(SeriesKey.for_container("pair", "p", "side"), T0, HALF, 3 * 10**8),
    "rollout": run(SeriesKey.for_container("rollout", "r1", "app"), T0, T0 + 30 * MINUTE_MS, 10**8)
    + run(SeriesKey.for_container("rollout", "r2", "app"), T0 + 30 * MINUTE_MS, HALF, 2 * 10**8),
    "gap": run(SeriesKey.for_container("gap", "g", "app"), T0, T0 + 30 * MINUTE_MS, 10**8)
    + run(SeriesKey.for_container("gap", "g", "app"), T0 + 90 * MINUTE_MS, WINDOW[1], 10**8),
}


def expected_avg(samples: list[Sample]) -> float:
    """The group's total usage averaged over the instants it had samples."""
    totals: dict[int, int] = {}
    for s in samples:
        totals[s.timestamp_ms] = totals.get(s.timestamp_ms, 0) + s.cpu_nanocores
    return statistics.mean(totals.values())


@pytest.mark.parametrize("stage", ["head", "statistics only"])
def test_summary_avg_is_over_the_covered_time(database_url: str, store: Store, stage: str) -> None:
    everything = sorted(
        (s for samples in COVERAGE_CASES.values() for s in samples), key=lambda s: s.timestamp_ms
    )
    write(store, *everything)
    if stage == "statistics only":
        expire_full_resolution(database_url, now_ms=T0 + 8 * HOUR_MS)
        with store.engine.connect() as conn:
            assert all(c.payload is None for c in conn.execute(schema.chunks.select()).all())
    groups = engine.summarize(
        store, SeriesFilter(QueryKind.CONTAINER), "namespace", *WINDOW, max_groups=10
    )
    assert [g.group for g in groups] == sorted(COVERAGE_CASES)
    for group in groups:
        samples = COVERAGE_CASES[group.group]
        cpu = group.cpu
        assert cpu is not None
        assert cpu.coverage == pytest.approx(0.5), group.group
        assert cpu.avg == pytest.approx(expected_avg(samples), rel=1e-12), group.group
        integral = sum(s.cpu_nanocores for s in samples) * EVERY / 1000
        assert cpu.integral == pytest.approx(integral, rel=1e-12)
        # What avg was before: the integral over the whole window, half of the covered avg.
        assert cpu.avg * cpu.coverage == pytest.approx(integral / 7200, rel=1e-12)
        assert cpu.avg * cpu.coverage == pytest.approx(cpu.avg / 2)
        if group.group == "half":  # one series: its p95 is of the values avg averages
            assert cpu.p95 > cpu.avg * cpu.coverage * 1.5  # the old avg read small beside it
            assert cpu.avg < cpu.p95


def test_covered_time_of_a_group() -> None:
    from recorder.stats.buckets import Accumulator

    def acc(first_ms: int, last_ms: int, count: int, interval_ms: int) -> Accumulator:
        return Accumulator(
            exact=True, count=count, first_ms=first_ms, last_ms=last_ms, interval_ms=interval_ms
        )

    one = acc(0, 90, 10, 10)
    assert engine.covered_ms([one]) == 100
    assert engine.covered_ms([acc(0, 90, 5, 10)]) == 50  # half its polls missed
    assert engine.covered_ms([one, acc(0, 90, 10, 10)]) == 100  # side by side
    assert engine.covered_ms([one, acc(100, 190, 10, 10)]) == 200  # one after the other
    assert engine.covered_ms([one, acc(50, 140, 10, 10)]) == 150  # overlapping
    # Series of unknown overlap: between the most covered one and their sum (here 100 + 20).
    assert 100 < engine.covered_ms([one, acc(0, 990, 2, 10)]) < 120
    # Never less than the most covered series (a sparse one beside it lowers the density).
    assert engine.covered_ms([acc(0, 990, 100, 10), acc(0, 990, 2, 10)]) == 1000
    assert engine.covered_ms([acc(0, 0, 1, 0)]) == 0  # a single sample: no interval
    assert engine.covered_ms([]) == 0


def test_raw_history_of_many_containers_reads_a_slice_of_series_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The series of a raw answer are read a slice at a time (a namespace's 77,000 held 40 MB
    at once), the answer the same: every series in id order, each with its own points; and
    an answer stopped by its bounds part-way leaves the store readable."""
    keys = [SeriesKey.for_container("big", f"pod-{i}", "app") for i in range(10_000)]
    other = SeriesKey.for_container("small", "pod", "app")
    samples = tuple(
        Sample(key, T0 + 15_000 * j, 15_000, 1_000_000 + 10 * i + j, 2**20)
        for j in range(2)
        for i, key in enumerate([*keys, other])
    )
    store.write(Batch(Kind.CONTAINER, samples), now_ms=T0 + 30_000)
    where = SeriesFilter(QueryKind.CONTAINER, namespace="big")
    query = HistoryQuery(Resource.CPU, where, T0, T0 + MINUTE_MS)
    monkeypatch.setattr(engine, "RAW_SLICE_UNITS", 500)
    monkeypatch.setattr(series, "ITER_BATCH_ROWS", 250)  # rows fetched at a time

    def answer() -> tuple[list[str], list[list[tuple[int, object]]], int]:
        pods: list[str] = []
        points: list[list[tuple[int, object]]] = []
        slices = 0
        for part, outputs in engine.raw_history(store, query, max_points=10**6, max_samples=10**7):
            assert [o.labels for o in outputs] == [s.labels for s in part]
            pods.extend(s.labels["pod"] for s in part)
            points.extend(s.points for s in part)
            slices += 1
        return pods, points, slices

    pods, points, slices = answer()  # also warms the statement caches
    s = schema.series
    with store.reading() as conn:  # id order: the writer numbers a batch's new series in
        # the order of their unique index (pod-0, pod-1, pod-10, ...), not the batch's
        by_id = list(
            conn.execute(select(s.c.pod).where(s.c.namespace == "big").order_by(s.c.id)).scalars()
        )
    assert len(by_id) == 10_000
    assert pods == by_id
    number = {f"pod-{i}": i for i in range(10_000)}
    assert points == [
        [(T0, 1_000_000 + 10 * number[pod]), (T0 + 15_000, 1_000_001 + 10 * number[pod])]
        for pod in by_id
    ]
    assert slices == 20

    with store.reading() as conn:
        tracemalloc.start()
        try:
            outputs, units = engine.units_of(conn, where)
            every_series = tracemalloc.get_traced_memory()[0]
            del outputs, units
        finally:
            tracemalloc.stop()
    tracemalloc.start()
    try:
        for part, _outputs in engine.raw_history(store, query, max_points=10**6, max_samples=10**7):
            del part, _outputs
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert every_series > 2_000_000
    assert peak < every_series / 2, (peak, every_series)

    with pytest.raises(QueryError, match="points"):
        list(engine.raw_history(store, query, max_points=5_000, max_samples=10**7))
    assert answer()[0] == pods

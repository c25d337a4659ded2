"""Workloads' block statistics (``recorder.store.workload_compaction``, ``workload_stats``),
taken at compaction, on both databases: a ``kind=workload`` history whose step holds whole
blocks reads them, and answers exactly what the aligned sum of the model's samples gives
(percentiles within the sketch's error) across blocks, a rollout that renames every pod, a
missed poll and a late sample; it still answers once the samples have expired, and within a
sample bound the samples alone could not meet. Blocks without statistics (the newest, not
compacted yet) and a bare pod's workload are read from the samples in the same answer."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from recorder.domain import (
    DEFAULT_CLUSTER,
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
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store import Store, open_store, schema, workload_compaction, workload_stats
from recorder.store.deletion import Doomed, delete_history
from recorder.store.objects import ObjectStore
from recorder.store.retention import RetentionPolicy

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
INTERVAL = 30_000
LOOKBACK = 2 * INTERVAL
BLOCK = 5 * 60_000
END = T0 + 4 * BLOCK - 1  # four blocks
ROLLOUT = T0 + 2 * BLOCK - 40_000  # the new pods start just before a block ends
MISSED = (T0 + BLOCK - 30_000, T0 + BLOCK + 30_000)  # web-a-1 misses the polls around a block end
LATE = T0 + BLOCK + 7_000  # ...and one of them arrives late, after compaction
# pod -> (first sample, last sample): pods report at different offsets within the interval.
PODS = {
    "web-a-1": (T0 + 7_000, ROLLOUT + 60_000),
    "web-a-2": (T0 + 19_000, ROLLOUT + 90_000),
    "web-b-1": (ROLLOUT + 3_000, END),
    "web-b-2": (ROLLOUT + 41_000, END),
    "job-x": (T0 + 2 * BLOCK + 1_000, T0 + 2 * BLOCK + 100_000),  # a bare pod, one block
}
CONTAINERS = ("app", "sidecar")
WORKLOAD = {p: ("Deployment", "web") for p in PODS if p.startswith("web")}


def cpu(pod: str, container: str, ts: int) -> int:
    return (len(pod) * 37 + len(container)) * 1_000_000 + (ts // 1000) % 997 * 1_013


def memory(pod: str, container: str, ts: int) -> int:
    return (len(pod) * 10 + len(container)) * 2**20 + (ts // 1000) % 7919 * 4_099


def stamps(*, late: bool) -> Iterator[tuple[str, int]]:
    for pod, (first, last) in PODS.items():
        for ts in range(first, last + 1, INTERVAL):
            missed = pod == "web-a-1" and MISSED[0] <= ts < MISSED[1]
            if not missed or (late and ts == LATE):
                yield pod, ts


def sample(pod: str, container: str, ts: int) -> Sample:
    key = SeriesKey.for_container("shop", pod, container)
    return Sample(key, ts, INTERVAL, cpu(pod, container, ts), memory(pod, container, ts))


def write(store: Store, found: list[tuple[str, int]]) -> None:
    rows = sorted((sample(p, c, ts) for p, ts in found for c in CONTAINERS), key=_time)
    for begin in range(0, len(rows), 50):
        part = rows[begin : begin + 50]
        store.write(Batch(Kind.CONTAINER, part), now_ms=part[-1].timestamp_ms)


def _time(s: Sample) -> int:
    return s.timestamp_ms


def reference(workload: str, resource: Resource, *, late: bool) -> list[tuple[int, int]]:
    """Each instant's sum of each pod's newest sample within the lookback, from the model."""
    value = cpu if resource is Resource.CPU else memory
    members = [p for p in PODS if WORKLOAD.get(p, ("Pod", p))[1] == workload]
    seen: dict[str, list[int]] = {}
    for pod, ts in stamps(late=late):
        seen.setdefault(pod, []).append(ts)
    points = []
    for t in range(T0, END + 1, INTERVAL):
        total, counted = 0, False
        for pod in members:
            newest = max((ts for ts in seen.get(pod, ()) if t - LOOKBACK < ts <= t), default=None)
            if newest is not None:
                total += sum(value(pod, c, newest) for c in CONTAINERS)
                counted = True
        if counted:
            points.append((t, total))
    return points


def expected(points: list[tuple[int, int]], step: int, agg: Agg) -> dict[int, float]:
    by_bucket: dict[int, list[int]] = {}
    for t, v in points:
        by_bucket.setdefault(t - t % step, []).append(v)
    out: dict[int, float] = {}
    for bucket, values in by_bucket.items():
        if agg is Agg.AVG:
            out[bucket] = sum(values) / len(values)
        elif agg is Agg.MAX:
            out[bucket] = max(values)
        elif agg is Agg.MIN:
            out[bucket] = min(values)
        elif agg is Agg.SUM:
            out[bucket] = sum(values)
        elif agg is Agg.COUNT:
            out[bucket] = len(values)
        elif agg is Agg.LAST:
            out[bucket] = values[-1]
        elif agg is Agg.STDDEV:
            mean = sum(values) / len(values)
            out[bucket] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        else:  # p95: the value at rank floor(q * (n - 1)) of the sorted values
            ordered = sorted(values)
            out[bucket] = ordered[int(0.95 * (len(ordered) - 1))]
    return out


@pytest.fixture
def shop(database_url: str) -> Iterator[Store]:
    store = open_store(database_url, block_ms=BLOCK)
    store.migrate()
    store.interval_ms = INTERVAL
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    objects.record_pods([("shop", p, *WORKLOAD[p], None) for p in WORKLOAD], now_ms=T0)
    write(store, list(stamps(late=False)))
    try:
        yield store
    finally:
        store.close()


def compact(store: Store, until: int) -> None:
    """Compact every block that ended by ``until`` (the grace included)."""
    store.maintain(now_ms=until + 600_000)


def history(
    store: Store, workload: str, resource: Resource, step: int, agg: Agg, **kw: int
) -> tuple[dict[int, object], Tier]:
    where = SeriesFilter(QueryKind.WORKLOAD, namespace="shop", workload=workload)
    result = engine.history(
        store,
        HistoryQuery(resource, where, T0, END, step, agg),
        max_points=10**5,
        interval_ms=INTERVAL,
        **kw,
    )
    if not result.series:
        return {}, result.tier
    (series,) = result.series
    return dict(series.points), result.tier


def rows(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(schema.metadata.tables[table])
            ).scalar_one()
        )


AGGS = [Agg.AVG, Agg.MAX, Agg.MIN, Agg.SUM, Agg.COUNT, Agg.LAST, Agg.STDDEV, Agg.P95]


def assert_matches(found: dict[int, object], want: dict[int, float], agg: Agg) -> None:
    assert sorted(found) == sorted(want)
    for bucket, value in want.items():
        got = float(found[bucket])  # type: ignore[arg-type]
        if agg.quantile is None:
            assert got == pytest.approx(value, rel=1e-9, abs=1e-6), (bucket, agg)
        else:
            assert abs(got - value) <= RELATIVE_ACCURACY * value + 1e-9, (bucket, agg)


@pytest.mark.parametrize("resource", list(Resource))
def test_compacted_blocks_answer_from_workload_statistics_as_the_samples_do(
    shop: Store, resource: Resource
) -> None:
    compact(shop, T0 + 3 * BLOCK)  # three blocks compacted; the last one stays in the head
    # A row per workload per block with samples: web in blocks 0-2; the bare pod (its own
    # workload, in block 2) has none: its pod's statistics are its own, its samples answer.
    assert rows(shop, "workload_stats") == 3
    assert rows(shop, "workload_blocks") == 3
    for workload in ("web", "job-x"):
        points = reference(workload, resource, late=False)
        for step in (BLOCK, 2 * BLOCK):
            for agg in AGGS:
                found, tier = history(shop, workload, resource, step, agg)
                assert tier is Tier.STATISTICS
                assert_matches(found, expected(points, step, agg), agg)


def test_the_rollout_s_block_counts_pods_of_the_block_before_within_the_lookback(
    shop: Store,
) -> None:
    """web-a-1 missed the polls around block 1's start: at its first instants its newest
    sample lies in block 0, read from that block's statistics (its last value)."""
    compact(shop, T0 + 3 * BLOCK)
    with shop.engine.connect() as conn:
        (row,) = workload_stats.read_rows(
            conn,
            [(DEFAULT_CLUSTER, "shop", "Deployment", "web")],
            T0 + BLOCK,
            T0 + 2 * BLOCK - 1,
            ("count", "first_ms", "cpu_min"),
            block_ms=BLOCK,
        )
    in_block = [
        (t, v)
        for t, v in reference("web", Resource.CPU, late=False)
        if T0 + BLOCK <= t < T0 + 2 * BLOCK
    ]
    assert row[1:] == (T0 + BLOCK, len(in_block), in_block[0][0], min(v for _t, v in in_block))


def test_a_late_sample_takes_its_block_s_statistics_again(shop: Store) -> None:
    compact(shop, T0 + 3 * BLOCK)
    late = reference("web", Resource.CPU, late=True)
    on_time = reference("web", Resource.CPU, late=False)
    assert expected(late, BLOCK, Agg.AVG) != expected(on_time, BLOCK, Agg.AVG)  # it matters
    write(shop, [("web-a-1", LATE)])
    compact(shop, T0 + 3 * BLOCK)  # block 1 again, with the late sample
    for agg in AGGS:
        found, tier = history(shop, "web", Resource.CPU, BLOCK, agg)
        assert tier is Tier.STATISTICS
        assert_matches(found, expected(late, BLOCK, agg), agg)


def test_workload_history_outlives_the_samples(shop: Store) -> None:
    store = shop
    compact(store, END + 1)
    with_samples = {agg: history(store, "web", Resource.MEMORY, BLOCK, agg)[0] for agg in AGGS}
    store.retention = RetentionPolicy(full_resolution_ms=BLOCK, statistics_ms=30 * BLOCK)
    store.maintain(now_ms=END + 10 * BLOCK)  # every payload expires; statistics stay
    with store.engine.connect() as conn:
        kept = conn.execute(
            select(func.count()).where(schema.chunks.c.payload.is_not(None))
        ).scalar_one()
    assert kept == 0
    for agg in AGGS:
        found, tier = history(store, "web", Resource.MEMORY, BLOCK, agg)
        assert tier is Tier.STATISTICS
        assert found == with_samples[agg]
        assert_matches(
            found, expected(reference("web", Resource.MEMORY, late=False), BLOCK, agg), agg
        )
    # Statistics retention takes the workloads' rows with the chunks'.
    store.maintain(now_ms=END + 40 * BLOCK)
    assert rows(store, "workload_stats") == rows(store, "workload_blocks") == 0


def test_statistics_answer_within_a_sample_bound_the_samples_exceed(shop: Store) -> None:
    small = 100  # fewer than one block of web's samples (2 pods x 2 containers x 10 polls)
    with pytest.raises(QueryError, match="raw samples"):
        history(shop, "web", Resource.CPU, BLOCK, Agg.MAX, max_samples=small)
    compact(shop, END + 1)  # every block compacted: no sample is read
    found, _ = history(shop, "web", Resource.CPU, BLOCK, Agg.MAX, max_samples=small)
    assert_matches(
        found, expected(reference("web", Resource.CPU, late=False), BLOCK, Agg.MAX), Agg.MAX
    )


def test_without_workload_statistics_the_samples_answer(
    shop: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Taking them fails (our seam): compaction goes on, says so, and the history is read
    from the samples, the same answer."""

    def broken(*_args: object, **_kw: object) -> int:
        raise RuntimeError("no statistics today")

    monkeypatch.setattr(workload_compaction, "take", broken)
    with caplog.at_level(logging.WARNING):
        compact(shop, T0 + 3 * BLOCK)
    assert "were not taken (RuntimeError: no statistics today)" in caplog.text
    assert rows(shop, "workload_stats") == rows(shop, "workload_blocks") == 0
    assert rows(shop, "chunks") > 0
    for agg in AGGS:
        found, _ = history(shop, "web", Resource.CPU, BLOCK, agg)
        assert_matches(found, expected(reference("web", Resource.CPU, late=False), BLOCK, agg), agg)


def test_deleting_a_namespace_deletes_its_workloads_statistics(shop: Store) -> None:
    compact(shop, END + 1)
    assert rows(shop, "workload_stats") > 0
    with shop.engine.begin() as conn:
        delete_history(conn, Doomed(DEFAULT_CLUSTER, "shop"))
    assert rows(shop, "workload_stats") == rows(shop, "workload_blocks") == 0

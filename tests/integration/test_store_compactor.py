"""Compaction (``recorder.store.compactor``), late samples and deduplication on SQLite and
PostgreSQL; retention is tested in test_store_retention.py."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from sqlalchemy import func, inspect, select

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
)
from recorder.errors import StoreUnavailable
from recorder.query import engine
from recorder.stats.block import squares_from_bytes
from recorder.stats.sketch import RELATIVE_ACCURACY, QuantileSketch, exact_quantile
from recorder.store import Store, open_store, schema
from recorder.store import compactor as compactor_module

HOUR = 3_600_000
T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z, a block boundary
STEP = 15_000


def keys(n: int) -> list[SeriesKey]:
    return [SeriesKey.for_container("ns", f"pod-{i}", "app") for i in range(n)]


def synthetic(keys: list[SeriesKey], start: int, end: int, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for ts in range(start, end, STEP):
        for key in keys:
            if rng.random() < 0.03:  # missed scrapes: missing is missing
                continue
            cpu = 0 if rng.random() < 0.05 else rng.randrange(1, 3_000_000_000)
            memory = rng.randrange(1, 4_000_000) * 1024
            samples.append(Sample(key, ts, 10_043, cpu, memory))
    return samples


def write_polls(store: Store, samples: list[Sample]) -> None:
    by_ts: dict[int, list[Sample]] = {}
    for sample in samples:
        by_ts.setdefault(sample.timestamp_ms, []).append(sample)
    for ts in sorted(by_ts):
        store.write(Batch(Kind.CONTAINER, tuple(by_ts[ts])), now_ms=ts)


def expected(samples: list[Sample], resource: Resource) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for s in sorted(samples, key=lambda s: (s.key.pod, s.timestamp_ms)):
        value = s.cpu_nanocores if resource is Resource.CPU else s.memory_bytes
        out.setdefault(s.key.pod, []).append((s.timestamp_ms, value))
    return out


def read_all(
    store: Store, resource: Resource, start: int = 0, end: int = 2**62
) -> dict[str, list[tuple[int, int]]]:
    query = HistoryQuery(resource, SeriesFilter(QueryKind.CONTAINER), start, end)
    found = engine.history(store, query, max_points=10**6).series
    return {s.labels["pod"]: s.points for s in found}


def count(store: Store, table: schema.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def chunks_by_kind(store: Store) -> dict[str, int]:
    """How many chunks each kind of series has: a container's hold its samples, a pod's (made
    by compaction) the statistics of its containers' sum."""
    c, s = schema.chunks, schema.series
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.c.kind, func.count())
            .select_from(c)
            .join(s, s.c.id == c.c.series_id)
            .group_by(s.c.kind)
        ).all()
    return {kind: int(n) for kind, n in rows}


def test_history_reads_back_identically_before_and_after_compaction(store: Store) -> None:
    series = keys(6)
    samples = synthetic(series, T0, T0 + 3 * HOUR + 20 * 60_000)
    write_polls(store, samples)
    for resource in Resource:
        assert read_all(store, resource) == expected(samples, resource)

    report = store.maintain(now_ms=T0 + 3 * HOUR + 20 * 60_000, grace_ms=10 * 60_000)
    assert report.compaction.blocks == 3
    assert report.compaction.samples == sum(1 for s in samples if s.timestamp_ms < T0 + 3 * HOUR)
    # One chunk per container per block, and one per pod (each pod here has one container).
    assert chunks_by_kind(store) == {"container": 3 * len(series), "pod": 3 * len(series)}
    with store.engine.connect() as conn:
        head_min = conn.execute(select(func.min(schema.samples_head.c.ts_ms))).scalar()
    assert head_min >= T0 + 3 * HOUR  # only the open block is left in the head

    for resource in Resource:
        assert read_all(store, resource) == expected(samples, resource)
    # A range crossing the chunk/head seam and cutting blocks in the middle.
    start, end = T0 + HOUR + 7 * STEP, T0 + 3 * HOUR + 5 * STEP
    inside = [s for s in samples if start <= s.timestamp_ms <= end]
    assert read_all(store, Resource.CPU, start, end) == expected(inside, Resource.CPU)

    again = store.maintain(now_ms=T0 + 3 * HOUR + 20 * 60_000, grace_ms=10 * 60_000)
    assert again.compaction.blocks == 0  # idempotent
    assert read_all(store, Resource.MEMORY) == expected(samples, Resource.MEMORY)


def summed(samples: Sequence[Sample]) -> list[tuple[int, int, int]]:
    """(timestamp, cpu, memory) of the sum of ``samples`` at each instant, in time order."""
    by_ts: dict[int, tuple[int, int]] = {}
    for s in samples:
        cpu, memory = by_ts.get(s.timestamp_ms, (0, 0))
        by_ts[s.timestamp_ms] = (cpu + s.cpu_nanocores, memory + s.memory_bytes)
    return [(ts, *by_ts[ts]) for ts in sorted(by_ts)]


def test_chunk_statistics_match_the_raw_samples(store: Store) -> None:
    """Each container's chunk holds its samples' statistics; each pod's statistics-only chunk
    those of its containers summed at each instant (pod-0 has two containers)."""
    series = [*keys(3), SeriesKey.for_container("ns", "pod-0", "sidecar")]
    samples = synthetic(series, T0, T0 + HOUR, seed=7)
    write_polls(store, samples)
    store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    with store.engine.connect() as conn:
        rows = {
            row.series_id: row
            for row in conn.execute(
                select(
                    schema.chunks,
                    schema.series.c.kind,
                    schema.series.c.cluster,
                    schema.series.c.pod,
                    schema.series.c.container,
                ).join(schema.series, schema.series.c.id == schema.chunks.c.series_id)
            )
        }
    assert sorted((r.kind, r.pod, r.container) for r in rows.values()) == [
        ("container", "pod-0", "app"),
        ("container", "pod-0", "sidecar"),
        ("container", "pod-1", "app"),
        ("container", "pod-2", "app"),
        ("pod", "pod-0", ""),
        ("pod", "pod-1", ""),
        ("pod", "pod-2", ""),
    ]
    for row in rows.values():
        assert row.cluster == DEFAULT_CLUSTER
        assert row.block_start_ms == T0
        if row.kind == "pod":
            assert row.payload is None  # its samples are its containers'
            mine = summed([s for s in samples if s.key.pod == row.pod])
        else:
            assert row.payload is not None
            mine = [
                (s.timestamp_ms, s.cpu_nanocores, s.memory_bytes)
                for s in samples
                if (s.key.pod, s.key.container) == (row.pod, row.container)
            ]
        cpu = [c for _, c, _ in mine]
        memory = [m for _, _, m in mine]
        assert (row.count, row.first_ms, row.last_ms) == (len(mine), mine[0][0], mine[-1][0])
        assert (row.cpu_sum, row.cpu_min, row.cpu_max, row.cpu_last) == (
            sum(cpu),
            min(cpu),
            max(cpu),
            cpu[-1],
        )
        assert (row.memory_sum, row.memory_min, row.memory_max, row.memory_last) == (
            sum(memory),
            min(memory),
            max(memory),
            memory[-1],
        )
        assert squares_from_bytes(row.cpu_sumsq) == sum(v * v for v in cpu)
        assert squares_from_bytes(row.memory_sumsq) == sum(v * v for v in memory)
        for q in (0.5, 0.75, 0.9, 0.95, 0.99):
            exact = exact_quantile(cpu, q)
            estimate = QuantileSketch.from_bytes(row.cpu_sketch).quantile(q)
            assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-9


def test_late_samples_merge_into_a_compacted_block_without_duplicates(store: Store) -> None:
    key = keys(1)[0]
    on_time = [Sample(key, T0 + i * STEP, 1, i, i) for i in range(0, 240, 2)]
    write_polls(store, on_time)
    store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    # Another replica, whose memory did not know these timestamps yet, appended the odd ones
    # late, plus a duplicate, with greater values, of a sample that is already compacted.
    with store.engine.begin() as conn:
        sid = conn.execute(
            select(schema.series.c.id).where(schema.series.c.kind == Kind.CONTAINER.value)
        ).scalar_one()
        late = [(T0 + i * STEP, sid, 1, i, i) for i in range(1, 240, 2)]
        store.head.append(conn, [*late, (T0, sid, 1, 999, 999)])
    report = store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    assert report.compaction.duplicates_dropped == 1
    assert chunks_by_kind(store) == {"container": 1, "pod": 1}  # merged, not added
    # The duplicate collapses to the greater sample, whichever was compacted first.
    want = [(T0, 999)] + [(T0 + i * STEP, i) for i in range(1, 240)]
    assert read_all(store, Resource.CPU)["pod-0"] == want
    # The pod's statistics were taken again over the merged block.
    for agg, value in ((Agg.COUNT, 240), (Agg.SUM, sum(v for _, v in want)), (Agg.MAX, 999)):
        query = HistoryQuery(
            Resource.CPU, SeriesFilter(QueryKind.POD), T0, T0 + HOUR - 1, HOUR, agg
        )
        [pod] = engine.history(store, query, max_points=9).series
        assert pod.points == [(T0, value)], agg


def test_compaction_is_all_or_nothing_per_block(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = synthetic(keys(4), T0, T0 + HOUR, seed=3)
    write_polls(store, samples)
    real = compactor_module.encode_samples
    calls = 0

    def failing(*args: list[int]) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("crash in the middle of a block")
        return real(*args)

    monkeypatch.setattr(compactor_module, "encode_samples", failing)
    with pytest.raises(RuntimeError):
        store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    assert count(store, schema.chunks) == 0
    assert count(store, schema.samples_head) == len(samples)
    monkeypatch.setattr(compactor_module, "encode_samples", real)
    store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    assert chunks_by_kind(store) == {"container": 4, "pod": 4}
    assert read_all(store, Resource.CPU) == expected(samples, Resource.CPU)


def test_restart_after_compaction_still_skips_stored_samples(database_url: str) -> None:
    samples = synthetic(keys(2), T0, T0 + HOUR, seed=9)
    store = open_store(database_url)
    store.migrate()
    write_polls(store, samples)
    store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    store.close()
    restarted = open_store(database_url)
    try:
        result = restarted.write(Batch(Kind.CONTAINER, tuple(samples[-2:])), now_ms=0)
        assert result.written == 0
        assert count(restarted, schema.samples_head) == 0
    finally:
        restarted.close()  # a failure here must not leak a connection into the next test


def test_postgres_head_partitions_are_dropped_after_compaction(postgres_url: str) -> None:
    store = open_store(postgres_url)
    store.migrate()
    write_polls(store, synthetic(keys(2), T0, T0 + 2 * HOUR))
    names = set(inspect(store.engine).get_table_names())
    assert {f"samples_head_{T0}_{T0 + HOUR}", f"samples_head_{T0 + HOUR}_{T0 + 2 * HOUR}"} <= names
    store.maintain(now_ms=T0 + HOUR + 5 * 60_000, grace_ms=0)
    names = set(inspect(store.engine).get_table_names())
    assert f"samples_head_{T0}_{T0 + HOUR}" not in names
    assert f"samples_head_{T0 + HOUR}_{T0 + 2 * HOUR}" in names
    store.close()


def test_a_second_replicas_duplicates_are_counted_once_before_compaction(store: Store) -> None:
    samples = synthetic(keys(2), T0, T0 + 20 * 60_000, seed=4)
    write_polls(store, samples)
    with store.engine.begin() as conn:  # another replica wrote the same polls
        ids = dict(conn.execute(select(schema.series.c.pod, schema.series.c.id)).all())
        store.head.append(
            conn,
            [(s.timestamp_ms, ids[s.key.pod], 1, s.cpu_nanocores, s.memory_bytes) for s in samples],
        )
    for agg in (Agg.COUNT, Agg.SUM):
        query = HistoryQuery(
            Resource.CPU, SeriesFilter(QueryKind.CONTAINER), T0, T0 + HOUR, HOUR, agg
        )
        found = {
            s.labels["pod"]: s.points for s in engine.history(store, query, max_points=99).series
        }
        for pod, points in expected(samples, Resource.CPU).items():
            want = len(points) if agg is Agg.COUNT else sum(v for _, v in points)
            assert found[pod] == [(T0, want)]
    assert read_all(store, Resource.CPU) == expected(samples, Resource.CPU)


def test_progress_counts_the_head_samples_compacted_up_to_their_total(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compactor_module, "_UPSERT_BATCH", 2)  # told after every 2 series
    samples = synthetic(keys(5), T0, T0 + 3 * HOUR + 20 * 60_000, seed=5)
    write_polls(store, samples)
    store.write(Batch(Kind.CONTAINER, (samples[7],)), now_ms=T0)  # a duplicate: read, dropped
    heard: list[tuple[str, int, int]] = []
    store.maintain(
        now_ms=T0 + 3 * HOUR + 20 * 60_000, grace_ms=0, progress=lambda *told: heard.append(told)
    )
    total = 1 + sum(1 for s in samples if s.timestamp_ms < T0 + 3 * HOUR)
    assert {what for what, _done, _total in heard} == {compactor_module.COMPACTING}
    assert {told_total for _what, _done, told_total in heard} == {total}
    done = [told_done for _what, told_done, _total in heard]
    assert done[0] == 0 and done[-1] == total and len(done) > 3 * 3
    assert done == sorted(done)


def test_a_sample_written_while_its_block_is_compacted_is_not_lost(sqlite_url: str) -> None:
    """On SQLite another process' write into a block being compacted waits for the block's
    transaction (which takes the write lock before it reads), instead of landing between the
    compactor's read of the head and its deletion of the block's rows."""
    store = open_store(sqlite_url)
    store.migrate()
    samples = synthetic(keys(3), T0, T0 + HOUR, seed=8)
    write_polls(store, samples)
    other = open_store(sqlite_url, sqlite_busy_timeout_seconds=0.2)  # another process' store
    late = Sample(keys(3)[0], T0 + 7_000, 10_043, 5, 4096)  # between two polls
    outcomes: list[str] = []

    def meanwhile(_what: str, done: int, _total: int) -> None:
        if done and not outcomes:  # inside the block's transaction
            try:
                other.write(Batch(Kind.CONTAINER, (late,)), now_ms=T0)
                outcomes.append("written")
            except StoreUnavailable:
                outcomes.append("locked")

    store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0, progress=meanwhile)
    assert outcomes == ["locked"]
    other.write(Batch(Kind.CONTAINER, (late,)), now_ms=T0)  # retried, as the poller's queue does
    assert read_all(store, Resource.CPU) == expected([*samples, late], Resource.CPU)
    for opened in (store, other):
        opened.close()


def test_compaction_learns_only_the_pods_of_the_block_it_compacts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compaction held every container series of the table with its pod (all the containers a
    # cluster ran, until their rollups expire); it learns now the pods of the rows it reads, a
    # streamed part at a time (7 rows here, so a pod's containers span several parts), and
    # still sums each pod over all its containers: one written with a node (which the recorder
    # never writes) counted too.
    monkeypatch.setattr(compactor_module, "STREAM_ROWS", 7)
    gone = 20_000
    with store.engine.begin() as conn:
        conn.execute(
            schema.series.insert(),
            [
                {
                    "cluster": DEFAULT_CLUSTER,
                    "kind": "container",
                    "node": "",
                    "namespace": "old",
                    "pod": f"replaced-long-ago-{i:06}",
                    "container": "app",
                    "first_seen_ms": T0 - 30 * 24 * HOUR,
                    "last_seen_ms": T0 - 29 * 24 * HOUR,
                }
                for i in range(gone)
            ],
        )
    series = [*keys(3), SeriesKey.for_container("ns", "pod-0", "sidecar")]
    samples = synthetic(series, T0, T0 + HOUR, seed=11)
    write_polls(store, samples)
    odd = [(T0 + i * STEP, 15_000, 1_000 + i, 4_096 * i) for i in range(0, 240, 3)]
    with store.engine.begin() as conn:
        odd_id = conn.execute(
            schema.series.insert().returning(schema.series.c.id),
            {
                "cluster": DEFAULT_CLUSTER,
                "kind": "container",
                "node": "n1",
                "namespace": "ns",
                "pod": "pod-1",
                "container": "odd",
                "first_seen_ms": T0,
                "last_seen_ms": T0,
            },
        ).scalar_one()
        store.head.append(
            conn, [(ts, odd_id, window, cpu, memory) for ts, window, cpu, memory in odd]
        )
    learnt: list[int] = []
    learn = compactor_module._PodsOf.learn

    def counting(self: compactor_module._PodsOf, sids: set[int]) -> None:
        learn(self, sids)
        learnt.append(len(self.of))

    monkeypatch.setattr(compactor_module._PodsOf, "learn", counting)
    report = store.maintain(now_ms=T0 + 2 * HOUR, grace_ms=0)
    assert report.compaction.blocks == 1
    assert max(learnt) == len(series) + 1  # the block's containers, none of the 20,000 gone
    assert len(learnt) > 10
    with store.engine.connect() as conn:
        pods = {
            row.pod: row
            for row in conn.execute(
                select(schema.chunks, schema.series.c.pod)
                .join(schema.series, schema.series.c.id == schema.chunks.c.series_id)
                .where(schema.series.c.kind == "pod")
            )
        }
    assert set(pods) == {"pod-0", "pod-1", "pod-2"}
    extra = [
        Sample(SeriesKey.for_container("ns", "pod-1", "odd"), ts, w, c, m) for ts, w, c, m in odd
    ]
    for pod, row in pods.items():
        mine = summed([s for s in [*samples, *extra] if s.key.pod == pod])
        assert (row.count, row.first_ms, row.last_ms) == (len(mine), mine[0][0], mine[-1][0])
        assert (row.cpu_sum, row.memory_max) == (
            sum(c for _, c, _ in mine),
            max(m for _, _, m in mine),
        )

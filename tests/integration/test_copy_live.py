"""recorder copy into a target that is already recording: every sample of both ends up readable
on the target (an exact duplicate collapsed by the one dedup rule), its statistics are those of
a database that recorded all of it, and running the copy again changes nothing. Compared
through the store's readers against a reference database that was written the same samples."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
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
)
from recorder.errors import StoreError
from recorder.query import engine
from recorder.stats import dedup
from recorder.stats.block import COLUMNS
from recorder.store import Store, open_store, schema
from recorder.store import copy as copy_module
from recorder.store.copy import CHUNKS, HEAD, SERIES, HistoryCopier
from recorder.store.retention import RetentionPolicy
from recorder.timeutil import DAY_MS
from tests.conftest import POSTGRES_ADMIN_URL
from tests.integration.test_store_compactor import HOUR, T0, synthetic

MINUTE = 60_000
CONTAINERS = [
    SeriesKey.for_container("ns", "pod-0", "app"),
    SeriesKey.for_container("ns", "pod-0", "sidecar"),
    SeriesKey.for_container("ns", "pod-1", "app"),
    SeriesKey.for_container("ns", "pod-2", "app"),
]
TARGET_ONLY = SeriesKey.for_container("ns", "pod-3", "app")
NODE = SeriesKey.for_node("n1")


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes a new, empty database of a kind (``sqlite`` or ``postgresql``); dropped after."""
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make(kind: str) -> str:
        name = f"recorder_test_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / name}.db"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        url = sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)
        return url.render_as_string(hide_password=False)

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def opened(url: str, **options: Any) -> Store:
    store = open_store(url, **options)
    store.migrate()
    return store


def record(store: Store, samples: list[Sample]) -> None:
    """Write ``samples`` as polls would: one batch per timestamp and kind, in time order."""
    polls: dict[tuple[int, Kind], list[Sample]] = {}
    for sample in samples:
        polls.setdefault((sample.timestamp_ms, sample.key.kind), []).append(sample)
    for (ts, kind), batch in sorted(polls.items()):
        store.write(Batch(kind, tuple(batch)), now_ms=ts)


def winners(*histories: list[Sample]) -> list[Sample]:
    """Every (series, timestamp) of the histories once, with the value the dedup rule keeps."""
    kept: dict[tuple[SeriesKey, int], Sample] = {}
    for sample in (s for history in histories for s in history):
        found = kept.get((sample.key, sample.timestamp_ms))
        if found is None or dedup.rank(_row(sample)) > dedup.rank(_row(found)):
            kept[(sample.key, sample.timestamp_ms)] = sample
    return list(kept.values())


def _row(sample: Sample) -> dedup.Row:
    return sample.timestamp_ms, sample.window_ms, sample.cpu_nanocores, sample.memory_bytes


def raw(store: Store) -> dict[tuple[str, Resource, tuple[tuple[str, str], ...]], list]:
    """Every series' samples, per kind and resource, read through the query engine."""
    out = {}
    for kind in (QueryKind.NODE, QueryKind.CONTAINER, QueryKind.POD):
        for resource in Resource:
            query = HistoryQuery(resource, SeriesFilter(kind), 0, 2**62)
            for series in engine.history(store, query, max_points=10**7).series:
                out[(kind.value, resource, tuple(sorted(series.labels.items())))] = series.points
    return out


def statistics(store: Store, step_ms: int, start_ms: int, end_ms: int) -> dict[Any, Any]:
    out = {}
    for kind in (QueryKind.CONTAINER, QueryKind.POD, QueryKind.NODE):
        for agg in (Agg.MAX, Agg.MIN, Agg.COUNT, Agg.AVG, Agg.STDDEV, Agg.P75):
            query = HistoryQuery(Resource.CPU, SeriesFilter(kind), start_ms, end_ms, step_ms, agg)
            answer = engine.history(store, query, max_points=10**6)
            out[(kind.value, agg)] = sorted(
                (tuple(sorted(s.labels.items())), tuple(s.points)) for s in answer.series
            )
    return out


def tables(store: Store) -> dict[str, Any]:
    """The series, chunks and rollups by series identity, and the head's rows, to compare two
    states."""
    s = schema.series
    identity = (s.c.cluster, s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container)
    out: dict[str, Any] = {}
    with store.engine.connect() as conn:
        out["series"] = sorted(
            tuple(row) for row in conn.execute(select(*identity, s.c.first_seen_ms))
        )
        for table, when in ((schema.chunks, "block_start_ms"), (schema.rollups, "day_start_ms")):
            columns = [table.c[name] for name in COLUMNS]
            if table is schema.chunks:
                columns.append(table.c.payload)
            rows = conn.execute(
                select(*identity, table.c[when], *columns).join(s, s.c.id == table.c.series_id)
            )
            out[table.name] = {tuple(row[:7]): tuple(row[7:]) for row in rows}
        head = schema.samples_head
        rows = conn.execute(
            select(*identity, head.c.ts_ms, head.c.window_ms, head.c.cpu_nanocores)
            .join(s, s.c.id == head.c.series_id)
            .order_by(*identity, head.c.ts_ms, head.c.cpu_nanocores)
        )
        out["head"] = [tuple(row) for row in rows]
    return out


def histories() -> tuple[list[Sample], list[Sample]]:
    """The source's samples, and the target's: its own over a range that overlaps the
    source's (the day before T0 and the hours after T0 + 1h30) and one that does not, plus a
    third of the source's samples in those ranges exactly (a second writer had them too). The
    target lacks one container of pod-0 and has a pod of its own."""
    source = synthetic([*CONTAINERS, NODE], T0 - 3 * HOUR, T0 + 3 * HOUR + 30 * MINUTE, seed=11)
    ranges = [(T0 - 2 * HOUR, T0 - HOUR - 30 * MINUTE), (T0 + HOUR + 30 * MINUTE, T0 + 5 * HOUR)]
    mine = [*CONTAINERS[1:], TARGET_ONLY, NODE]
    target = [s for i, (a, b) in enumerate(ranges) for s in synthetic(mine, a, b, seed=12 + i)]
    target += [
        s
        for i, s in enumerate(source)
        if i % 3 == 0 and any(a <= s.timestamp_ms < b for a, b in ranges)
    ]
    # Far from the source's history: a day before anything it has.
    target += synthetic(mine, T0 - DAY_MS - 2 * HOUR, T0 - DAY_MS - HOUR, seed=14)
    return source, target


PAIRS = [
    ("sqlite", "postgresql"),
    ("postgresql", "sqlite"),
    ("sqlite", "sqlite"),
    ("postgresql", "postgresql"),
]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_copy_into_a_recording_target_keeps_every_sample_of_both(
    databases: Callable[[str], str], source_kind: str, target_kind: str
) -> None:
    source_samples, target_samples = histories()
    source = opened(databases(source_kind))
    record(source, source_samples)
    # Blocks up to T0 + 3h compacted, the last half hour in the head; the day before rolled up.
    source.maintain(now_ms=T0 + 3 * HOUR + 30 * MINUTE, grace_ms=0)
    target = opened(databases(target_kind))
    record(target, target_samples)
    target.maintain(now_ms=T0 + 4 * HOUR + 30 * MINUTE, grace_ms=0)  # T0 + 4h on in the head
    everything = winners(source_samples, target_samples)
    reference = opened(databases("sqlite"))
    record(reference, everything)
    reference.maintain(now_ms=T0 + 4 * HOUR + 30 * MINUTE, grace_ms=0)

    before = sum(map(len, raw(target).values()))
    report = HistoryCopier(source, target).run()
    after = raw(target)
    assert after == raw(reference)
    assert sum(map(len, after.values())) > before
    assert report.chunks_merged > 0 and report.pods_recomputed > 0
    assert report.rollup_days_rebuilt == 1  # the day before T0, which both recorded
    assert report.head_samples_written > 0 and report.head_samples_already_there > 0
    # Statistics: per hour across the whole history (blocks with late head rows are decoded),
    # and over the day before T0 (its rollups, rebuilt from the merged chunks).
    hours = (HOUR, T0 - DAY_MS - 2 * HOUR, T0 + 5 * HOUR - 1)
    assert statistics(target, *hours) == statistics(reference, *hours)
    day = (DAY_MS, T0 - DAY_MS, T0 - 1)
    assert statistics(target, *day) == statistics(reference, *day)

    state = tables(target)
    again = HistoryCopier(source, target).run()
    assert (again.chunks_copied, again.chunks_merged, again.pods_recomputed) == (0, 0, 0)
    assert (again.head_samples_written, again.rollup_days_rebuilt) == (0, 0)
    assert tables(target) == state

    # Once the target has compacted what the copy put in its head, its chunks are exactly those
    # of a database that recorded everything, down to the sketches.
    for store in (target, reference):
        store.maintain(now_ms=T0 + 6 * HOUR, grace_ms=0)
    compacted = tables(target)
    assert compacted["chunks"] == tables(reference)["chunks"]
    assert compacted["head"] == []
    assert raw(target) == raw(reference)
    for store in (source, target, reference):
        store.close()


@pytest.mark.parametrize("target_kind", ["postgresql", "sqlite"])
def test_a_target_written_during_the_copy_keeps_everything(
    databases: Callable[[str], str], target_kind: str
) -> None:
    """A writer thread records new polls into the target while the copy runs."""
    source_samples, target_samples = histories()
    source = opened(databases("sqlite"))
    record(source, source_samples)
    source.maintain(now_ms=T0 + 3 * HOUR + 30 * MINUTE, grace_ms=0)
    target_url = databases(target_kind)
    target = opened(target_url)
    record(target, target_samples)
    target.maintain(now_ms=T0 + 4 * HOUR + 30 * MINUTE, grace_ms=0)

    live = open_store(target_url)  # the recorder's own store, beside the copy's
    polls = synthetic([*CONTAINERS, NODE], T0 + 5 * HOUR, T0 + 7 * HOUR, seed=21)
    written: list[Sample] = []
    during = threading.Event()
    copying = threading.Event()

    def writer() -> None:
        by_ts: dict[int, list[Sample]] = {}
        for sample in polls:
            by_ts.setdefault(sample.timestamp_ms, []).append(sample)
        for ts in sorted(by_ts):
            for kind in (Kind.NODE, Kind.CONTAINER):
                batch = tuple(s for s in by_ts[ts] if s.key.kind is kind)
                live.write(Batch(kind, batch), now_ms=ts)
                written.extend(batch)
            if copying.is_set():
                during.set()

    def progress(what: str, done: int, total: int) -> None:
        copying.set()
        if what == CHUNKS and done < total:
            during.wait(timeout=30)  # the writer has written since the copy began

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        HistoryCopier(source, target, progress=progress).run()
    finally:
        thread.join(timeout=120)
    assert during.is_set() and len(written) == len(polls)
    reference = opened(databases("sqlite"))
    record(reference, winners(source_samples, target_samples, polls))
    assert raw(target) == raw(reference)
    for store in (source, target, live, reference):
        store.close()


def test_progress_counts_up_to_each_total(
    databases: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy_module, "_PAGE", 5)
    monkeypatch.setattr(copy_module, "_HEAD_BATCH", 100)
    source_samples, _ = histories()
    source = opened(databases("sqlite"))
    record(source, source_samples)
    source.maintain(now_ms=T0 + 3 * HOUR + 30 * MINUTE, grace_ms=0)
    heard: list[tuple[str, int, int]] = []
    target = opened(databases("postgresql"))
    HistoryCopier(source, target, progress=lambda *told: heard.append(told)).run()
    tasks = {what for what, _done, _total in heard}
    assert tasks == {SERIES, CHUNKS, HEAD}
    for task in tasks:
        counts = [(done, total) for what, done, total in heard if what == task]
        assert counts[0][0] == 0 and counts[-1][0] == counts[-1][1] > 0, task
        assert _monotone(counts), task
        assert len(counts) > 3 or task == SERIES, task  # told page by page
    for store in (source, target):
        store.close()


def _monotone(counts: list[tuple[int, int]]) -> bool:
    """One total, and counts that never go back."""
    dones = [done for done, _total in counts]
    return len({total for _done, total in counts}) == 1 and dones == sorted(dones)


# --- blocks whose samples have expired on one side ------------------------------------------


def expired_side(url: str, samples: list[Sample]) -> Store:
    """A store that recorded ``samples`` and whose blocks have all expired to statistics."""
    store = opened(url, retention=RetentionPolicy(full_resolution_ms=HOUR))
    record(store, samples)
    store.maintain(now_ms=T0 + 4 * HOUR, grace_ms=0)
    return store


def test_statistics_only_blocks_merge_when_their_samples_lie_apart(
    databases: Callable[[str], str],
) -> None:
    """Both sides recorded the same hour, one before the other took over, and the samples of
    that hour have expired on both: the merged statistics are exact."""
    keys = [*CONTAINERS, NODE]
    early = synthetic(keys, T0, T0 + 20 * MINUTE, seed=31)
    late = synthetic(keys, T0 + 37 * MINUTE, T0 + HOUR, seed=32)
    source = expired_side(databases("sqlite"), early)
    target = expired_side(databases("postgresql"), late)
    reference = expired_side(databases("sqlite"), early + late)
    report = HistoryCopier(source, target).run()
    assert report.chunks_merged == len(keys) and report.pods_recomputed == 3
    exact = (Agg.MAX, Agg.MIN, Agg.COUNT, Agg.AVG, Agg.STDDEV)
    for kind in (QueryKind.CONTAINER, QueryKind.POD, QueryKind.NODE):
        for agg in exact:
            query = HistoryQuery(Resource.CPU, SeriesFilter(kind), T0, T0 + HOUR - 1, HOUR, agg)
            got, want = (
                sorted(
                    (tuple(sorted(series.labels.items())), series.points)
                    for series in engine.history(store, query, max_points=100).series
                )
                for store in (target, reference)
            )
            assert got == want and len(got) > 0, (kind, agg)
    for store in (source, target, reference):
        store.close()


def test_statistics_only_blocks_whose_samples_overlap_are_refused_before_anything_is_written(
    databases: Callable[[str], str],
) -> None:
    keys = [*CONTAINERS, NODE]
    # The target has not recorded pod-3: a copy that began writing would add its series.
    source = expired_side(
        databases("postgresql"), synthetic([*keys, TARGET_ONLY], T0, T0 + HOUR, seed=41)
    )
    target = expired_side(databases("sqlite"), synthetic(keys, T0, T0 + HOUR, seed=42))
    state = tables(target)
    with pytest.raises(StoreError, match=r"Nothing was copied. Copy a history into a database "):
        HistoryCopier(source, target).run()
    assert tables(target) == state
    for store in (source, target):
        store.close()


def test_a_copy_waits_for_the_targets_maintenance_round(databases: Callable[[str], str]) -> None:
    """On PostgreSQL the copy holds the maintenance lock while it writes, taking it once a
    round in progress has ended; rounds that start meanwhile are skipped."""
    source = opened(databases("sqlite"))
    record(source, synthetic(CONTAINERS, T0, T0 + HOUR, seed=51))
    url = databases("postgresql")
    target, replica = opened(url), open_store(url)
    skipped: list[bool] = []
    released = threading.Event()

    def progress(what: str, done: int, total: int) -> None:
        if what == SERIES and not skipped:
            skipped.append(replica.maintain(now_ms=T0 + 2 * HOUR).skipped)

    with replica.maintenance_excluded(on_wait=lambda: None):  # as a round in progress does
        copy = threading.Thread(
            target=lambda: (HistoryCopier(source, target, progress).run(), released.set())
        )
        copy.start()
        time.sleep(1.0)
        assert not released.is_set()
    copy.join(timeout=60)
    assert released.is_set() and skipped == [True]
    for store in (source, target, replica):
        store.close()

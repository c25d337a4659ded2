"""A summary over samples (``engine.summarize`` without rollups answering it), ``top`` and a
history whose step the samples answer gather their series a slice at a time, on one walk of
the head (``scan.HeadStream``): the same answer as all at once, a fraction of the memory, the
same bounds on decoded samples and points."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection

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
from recorder.errors import QueryError
from recorder.query import engine
from recorder.query.scan import HeadStream
from recorder.store import Store, head, open_store

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
STEP = 30_000
POLLS = 180  # 90 minutes: the first hour's block compacted, the rest in the head
WINDOW = (T0 + 20 * 60_000, T0 + POLLS * STEP - 1)  # across the compacted block and the head
PODS = 60


def polls() -> Iterator[tuple[int, list[Sample]]]:
    """Pods of 1-2 containers in three namespaces; each pod's ``sidecar`` appears only after
    half an hour, so its series id lies far from its pod's other containers' (a pod's series
    then come in more than one slice's range of ids)."""
    rng = random.Random(5)
    levels = {pod: rng.randrange(10**6, 10**9) for pod in range(PODS)}
    for step in range(POLLS):
        ts = T0 + step * STEP
        found = []
        for pod in range(PODS):
            namespace = ("shop", "db", "batch")[pod % 3]
            containers = ["app"] + (["sidecar"] if pod % 2 and step >= 60 else [])
            for container in containers:
                key = SeriesKey.for_container(namespace, f"pod-{pod}", container)
                cpu = max(0, int(rng.gauss(levels[pod], levels[pod] / 4)))
                found.append(Sample(key, ts, STEP, cpu, rng.randrange(10**4, 10**6) * 4096))
        yield ts, found


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    store.migrate()
    for ts, found in polls():
        store.write(Batch(Kind.CONTAINER, tuple(found)), now_ms=ts)
    report = store.maintain(now_ms=T0 + POLLS * STEP, grace_ms=10 * 60_000)
    assert report.compaction.blocks > 0  # the first hour is chunks, the rest head rows
    yield store
    store.close()


def summary(
    store: Store, kind: QueryKind, group_by: str, *, max_samples: int = 10**7
) -> list[object]:
    return list(
        engine.summarize(
            store,
            SeriesFilter(kind),
            group_by,
            *WINDOW,
            max_groups=1000,
            max_samples=max_samples,
            use_namespace_rollups=False,
        )
    )


@pytest.mark.parametrize(
    ("kind", "group_by"),
    [(QueryKind.CONTAINER, "namespace"), (QueryKind.POD, "pod"), (QueryKind.POD, "namespace")],
)
def test_slices_answer_as_one_slice(
    store: Store, monkeypatch: pytest.MonkeyPatch, kind: QueryKind, group_by: str
) -> None:
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", 10**9)
    whole = summary(store, kind, group_by)
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", 7)
    walks = 0
    real = head.read

    def counted(*args: object, **kwargs: object) -> Iterator[object]:
        nonlocal walks
        walks += 1
        yield from real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(head, "read", counted)
    sliced = summary(store, kind, group_by)
    assert sliced == whole and len(whole) == (3 if group_by == "namespace" else PODS)
    assert walks == 1  # the head walked once for all the slices, not once per slice


@pytest.mark.parametrize("containers", [False, True])
@pytest.mark.parametrize("agg", [Agg.P95, Agg.AVG, Agg.STDDEV])
def test_top_in_slices_answers_as_one_slice(
    store: Store, monkeypatch: pytest.MonkeyPatch, containers: bool, agg: Agg
) -> None:
    def top(slice_units: int) -> list[engine.TopRow]:
        monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", slice_units)
        return engine.top(store, SeriesFilter(QueryKind.POD), *WINDOW, agg, containers=containers)

    whole = top(10**9)
    assert top(7) == whole and len(whole) == (PODS * 3 // 2 if containers else PODS)


def history(store: Store, kind: QueryKind, agg: Agg, *, max_points: int = 10**6) -> object:
    query = HistoryQuery(Resource.CPU, SeriesFilter(kind), *WINDOW, step_ms=5 * 60_000, agg=agg)
    return engine.history(store, query, max_points=max_points)


@pytest.mark.parametrize("kind", [QueryKind.CONTAINER, QueryKind.POD])
@pytest.mark.parametrize("agg", [Agg.AVG, Agg.P95, Agg.MAX])
def test_a_stepped_history_in_slices_answers_as_one_slice(
    store: Store, monkeypatch: pytest.MonkeyPatch, kind: QueryKind, agg: Agg
) -> None:
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", 10**9)
    whole = history(store, kind, agg)
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", 7)
    assert history(store, kind, agg) == whole
    points = sum(len(s.points) for s in whole.series)  # type: ignore[attr-defined]
    assert len(whole.series) == (PODS * 3 // 2 if kind is QueryKind.CONTAINER else PODS)  # type: ignore[attr-defined]
    with pytest.raises(QueryError, match="points"):
        history(store, kind, agg, max_points=points - 1)
    assert history(store, kind, agg, max_points=points) == whole


def test_slices_hold_a_fraction_of_the_memory(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def peak(slice_units: int, run: Callable[[], object]) -> int:
        monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", slice_units)
        run()  # warm: imports, statements
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for run in (
        lambda: summary(store, QueryKind.CONTAINER, "namespace"),
        lambda: history(store, QueryKind.CONTAINER, Agg.AVG),
    ):
        whole, sliced = peak(10**9, run), peak(8, run)
        assert sliced < whole / 2, (sliced, whole)


def test_the_sample_bound_is_the_whole_answers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samples decoded by every slice add up against ``max_samples``: the least bound that
    answers is the same in slices as at once."""

    def least(slice_units: int) -> int:
        monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", slice_units)
        low, high = 1, 10**6
        while low < high:
            middle = (low + high) // 2
            try:
                summary(store, QueryKind.POD, "namespace", max_samples=middle)
                high = middle
            except QueryError:
                low = middle + 1
        return low

    bound = least(10**9)
    assert bound > 1000 and least(5) == bound


def test_a_head_stream_gives_each_slice_its_rows_and_keeps_others_aside(
    store: Store,
) -> None:
    with store.reading() as conn:
        rows = list(head.read(conn, _ids(conn), *WINDOW))
        ids = sorted({sid for sid, _row in rows})
        expected: dict[int, list[object]] = {}
        for sid, row in rows:
            expected.setdefault(sid, []).append(row)
        # Slices in order of their largest id; each takes ids below earlier slices' largest.
        slices = sorted([ids[1::3], ids[0::3], ids[2::3]], key=max)
        stream = HeadStream(conn, ids, *WINDOW)
        try:
            for wanted in slices:
                taken: dict[int, list[object]] = {}
                for sid, row in stream.take(wanted):
                    taken.setdefault(sid, []).append(row)
                assert taken == {sid: expected[sid] for sid in wanted}
        finally:
            stream.close()


def _ids(conn: Connection) -> list[int]:
    return [int(sid) for (sid,) in conn.exec_driver_sql("SELECT id FROM series")]


@pytest.mark.parametrize("slice_units", [10**9, 7])
def test_a_refusal_past_the_sample_bound_advises_what_the_answer_can_use(
    store: Store, monkeypatch: pytest.MonkeyPatch, slice_units: int
) -> None:
    """A summary's or ``top``'s window has no step: its refusal says how the window and the
    filters reach block statistics; a stepped history's says which step does."""
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", slice_units)
    window_advice = "end the window before the newest block"
    with pytest.raises(QueryError, match="more than 100 raw samples") as refused:
        summary(store, QueryKind.POD, "namespace", max_samples=100)
    assert window_advice in str(refused.value) and "use a step" not in str(refused.value)
    with pytest.raises(QueryError, match="more than 100 raw samples") as refused:
        engine.top(store, SeriesFilter(QueryKind.POD), *WINDOW, Agg.P95, max_samples=100)
    assert window_advice in str(refused.value) and "use a step" not in str(refused.value)
    query = HistoryQuery(
        Resource.CPU, SeriesFilter(QueryKind.POD), *WINDOW, step_ms=5 * 60_000, agg=Agg.AVG
    )
    with pytest.raises(QueryError, match="more than 100 raw samples: use a step"):
        engine.history(store, query, max_points=10**6, max_samples=100)

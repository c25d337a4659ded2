"""``*_over_time`` from the statistics tiers (recorder.query.promql.tiers through
``StoreSource.over_time``), on SQLite and PostgreSQL: a corpus of aligned range queries
answers exactly what the raw samples give (the same samples evaluated in memory), including
samples on the windows' edges; after the raw samples expire the statistics answer with a
warning; ``quantile_over_time`` comes from sketches with its error stated."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from recorder.api.app import AppDeps, create_app
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import QueryError
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query.promql.evaluation import Result, range_query
from recorder.query.promql.matchers import Matcher, MatchOp
from recorder.query.promql.source import MemorySource, StoreSource
from recorder.query.promql.values import VectorValue
from recorder.store import Store, open_store
from recorder.timeutil import DAY_MS, HOUR_MS
from tests.retention_support import expire_full_resolution
from tests.servers import serving

T0 = 1_714_521_600_000  # a UTC midnight
DAYS = 2
END = T0 + DAYS * DAY_MS
FIVE_MINUTES = 300_000
EVERY = Matcher.of("__name__", MatchOp.REGEX, ".+")


def _value(series: int, ts: int) -> tuple[int, int]:
    k = (ts - T0) // 1000
    return 10_000_000 + (k * 7919 * (series + 1)) % 90_000_000, 2**20 + (k * 31 + series) % 4096


@pytest.fixture
def history(store: Store) -> Store:
    """Two days of three containers of namespace shop: ``edge`` every 5 minutes on the grid
    (a sample on every hour and day boundary), ``off`` 17 s off it, ``gap`` on the grid but
    silent from 30 h to 40 h; compacted and rolled up but for the last hour."""
    keys = [
        SeriesKey.for_container("shop", f"p{i}", name)
        for i, name in enumerate(("edge", "off", "gap"))
    ]
    for hour in range(T0, END + HOUR_MS, HOUR_MS):
        samples = []
        for ts in range(hour, hour + HOUR_MS, FIVE_MINUTES):
            for i, key in enumerate(keys):
                at = ts + 17_000 if i == 1 else ts
                if i == 2 and T0 + 30 * HOUR_MS <= at < T0 + 40 * HOUR_MS:
                    continue
                samples.append(Sample(key, at, 30_000, *_value(i, at)))
        samples.sort(key=lambda s: s.timestamp_ms)
        store.write(Batch(Kind.CONTAINER, samples), now_ms=hour + HOUR_MS)
    store.maintain(now_ms=END + HOUR_MS + 20 * 60_000, grace_ms=0)
    return store


def _raw(store: Store, text: str, start: int, end: int, step: int) -> Result:
    everything = StoreSource(store).select([EVERY], T0 - DAY_MS, END + 2 * HOUR_MS)
    return range_query(MemorySource(everything), text, start, end, step)


def _table(result: Result) -> dict[tuple[tuple[str, str], ...], list[float | None]]:
    assert isinstance(result.value, VectorValue)
    return {
        s.labels: [
            v if p else None for v, p in zip(s.values.tolist(), s.present.tolist(), strict=True)
        ]
        for s in result.value.series
    }


def _same(ours: Result, theirs: Result, *, relative: float = 1e-12) -> None:
    a, b = _table(ours), _table(theirs)
    assert a.keys() == b.keys()
    for labels, values in a.items():
        for x, y in zip(values, b[labels], strict=True):
            assert (x is None) == (y is None), labels
            if x is not None and y is not None:
                assert math.isclose(x, y, rel_tol=relative), (labels, x, y)


CORPUS = [
    (f"{f}(recorder_container_{r}[{w}])", start, step)
    for f in (
        "count_over_time",
        "sum_over_time",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "last_over_time",
    )
    for r in ("cpu_usage_cores", "memory_working_set_bytes")
    for w, start, step in (
        ("1h", T0 + HOUR_MS, HOUR_MS),
        ("3h", T0 + 3 * HOUR_MS, HOUR_MS),
        ("1d", T0 + DAY_MS, DAY_MS),
    )
] + [
    (
        "sum by (namespace) "
        '(avg_over_time(recorder_container_cpu_usage_cores{namespace="shop"}[1d]))',
        T0 + DAY_MS,
        DAY_MS,
    ),
    ("max_over_time(recorder_container_cpu_usage_cores[2d])", T0 + 2 * DAY_MS, DAY_MS),
    (
        "avg_over_time(recorder_container_cpu_usage_cores[1h] offset 1h)",
        T0 + 2 * HOUR_MS,
        2 * HOUR_MS,
    ),
]


def test_tiers_answer_what_the_raw_samples_give(history: Store) -> None:
    everything = StoreSource(history).select([EVERY], T0 - DAY_MS, END + 2 * HOUR_MS)
    for text, start, step in CORPUS:
        ours = range_query(StoreSource(history), text, start, END, step)
        _same(ours, range_query(MemorySource(everything), text, start, END, step))
        assert ours.warnings == (), text

    # Without samples on the edges only the head's last hours are read as samples.
    source = StoreSource(history)
    text = 'avg_over_time(recorder_container_cpu_usage_cores{container="off"}[1h])'
    range_query(source, text, T0 + HOUR_MS, END, HOUR_MS)
    assert source.samples_read <= 24  # of 577 (the head's two hours)

    # ``edge`` has a sample on every hour: each [t - 1h, t] holds 13 of them, which the
    # block [t - 1h, t) alone (12) would not give.
    text = 'count_over_time(recorder_container_cpu_usage_cores{container="edge"}[1h])'
    ours = _table(range_query(StoreSource(history), text, T0 + HOUR_MS, T0 + 5 * HOUR_MS, HOUR_MS))
    assert list(ours.values()) == [[13.0] * 5]
    text = 'sum_over_time(recorder_container_cpu_usage_cores{container="edge"}[1h])'
    start = T0 + HOUR_MS
    ours_sum = _table(range_query(StoreSource(history), text, start, start, HOUR_MS))
    exact = sum(_value(0, ts)[0] for ts in range(T0, T0 + HOUR_MS + 1, FIVE_MINUTES)) / 1e9
    assert list(ours_sum.values()) == [[pytest.approx(exact, rel=1e-15)]]

    # quantile_over_time from the sketches, within their stated error.
    text = "quantile_over_time(0.9, recorder_container_cpu_usage_cores[1d])"
    ours = range_query(StoreSource(history), text, T0 + DAY_MS, END, DAY_MS)
    assert any("1% relative error" in w for w in ours.warnings)
    _same(ours, _raw(history, text, T0 + DAY_MS, END, DAY_MS), relative=0.03)


def test_expired_raw_samples_answer_from_whole_blocks_with_a_warning(
    history: Store, database_url: str
) -> None:
    aligned = 'avg_over_time(recorder_container_cpu_usage_cores{container="off"}[1d])'
    before = range_query(StoreSource(history), aligned, T0 + DAY_MS, END, DAY_MS)
    unaligned = 'max_over_time(recorder_container_memory_working_set_bytes{container="off"}[50m])'
    at = T0 + 10 * HOUR_MS + 25 * 60_000
    raw_before = range_query(StoreSource(history), unaligned, at, at, HOUR_MS)
    expire_full_resolution(database_url, now_ms=END + HOUR_MS + 20 * 60_000)

    after = range_query(StoreSource(history), aligned, T0 + DAY_MS, END, DAY_MS)
    _same(after, before)  # no sample on an edge: the statistics are the answer
    assert after.warnings == ()

    rounded = range_query(StoreSource(history), unaligned, at, at, HOUR_MS)
    assert any("rounded to whole 3600s blocks" in w for w in rounded.warnings)
    (values,) = _table(rounded).values()
    (expected,) = _table(raw_before).values()
    assert values[0] is not None and expected[0] is not None
    assert values[0] >= expected[0]  # the whole blocks [9h, 11h) hold the window's 50 minutes

    edges = 'sum_over_time(recorder_container_cpu_usage_cores{container="edge"}[1h])'
    left_out = range_query(StoreSource(history), edges, T0 + 2 * HOUR_MS, T0 + 2 * HOUR_MS, HOUR_MS)
    assert any("end sample" in w for w in left_out.warnings)
    hour = range(T0 + HOUR_MS, T0 + 2 * HOUR_MS, FIVE_MINUTES)  # the block without its end
    assert list(_table(left_out).values()) == [
        [pytest.approx(sum(_value(0, ts)[0] for ts in hour) / 1e9, rel=1e-15)]
    ]


def test_freshness_moves_with_late_samples_and_compaction(store: Store) -> None:
    """The cache's horizon is the head's oldest sample (on PostgreSQL the start of its block,
    read from the head's partitions: a bound): a late one moves it back; compaction changes the
    generation."""
    key = SeriesKey.for_container("shop", "p0", "edge")
    samples = [Sample(key, ts, 30_000, 5, 6) for ts in range(T0, T0 + 3 * HOUR_MS, FIVE_MINUTES)]
    store.write(Batch(Kind.CONTAINER, samples), now_ms=T0 + 3 * HOUR_MS)
    store.maintain(now_ms=T0 + 2 * HOUR_MS + 20 * 60_000, grace_ms=0)
    horizon, generation = StoreSource(store).freshness()
    assert horizon == T0 + 2 * HOUR_MS  # the head's oldest sample: the third hour's first
    late = Sample(key, T0 + 30 * 60_000 + 1, 30_000, 7, 8)
    store.write(Batch(Kind.CONTAINER, [late]), now_ms=T0 + 3 * HOUR_MS)
    moved_to = T0 if store.dialect == "postgresql" else late.timestamp_ms
    assert StoreSource(store).freshness() == (moved_to, generation)
    store.maintain(now_ms=T0 + 3 * HOUR_MS + 20 * 60_000, grace_ms=0)
    horizon, newer = StoreSource(store).freshness()
    assert horizon == T0 + 3 * HOUR_MS and newer != generation


def test_the_api_says_its_warnings_and_counts_cache_lookups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(url)
    store.migrate()
    key = SeriesKey.for_container("shop", "p0", "app")
    samples = [Sample(key, ts, 30_000, ts % 1000, 6) for ts in range(T0, END, FIVE_MINUTES)]
    store.write(Batch(Kind.CONTAINER, samples), now_ms=END)
    store.maintain(now_ms=END + 20 * 60_000, grace_ms=0)
    expire_full_resolution(url, now_ms=END + 20 * 60_000)
    http = CollectorRegistry()
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: (END + HOUR_MS) / 1000, http_registry=http)
    params = {
        "query": "max_over_time(recorder_container_cpu_usage_cores[50m])",
        "start": str((T0 + 25 * 60_000) / 1000),
        "end": str((T0 + 10 * HOUR_MS + 25 * 60_000) / 1000),
        "step": "3600",
    }
    try:
        with serving(create_app(deps)) as served:
            first = httpx.get(served + "/prometheus/api/v1/query_range", params=params)
            second = httpx.get(served + "/prometheus/api/v1/query_range", params=params)
    finally:
        store.close()
    assert first.status_code == 200
    assert first.json() == second.json()
    assert any("rounded to whole 3600s blocks" in w for w in first.json()["warnings"])
    assert len(first.json()["data"]["result"][0]["values"]) == 11
    lookups = "recorder_promql_cache_lookups_total"
    assert http.get_sample_value(lookups, {"result": "miss"}) == 1
    assert http.get_sample_value(lookups, {"result": "hit"}) == 1
    assert (http.get_sample_value("recorder_promql_cache_bytes") or 0) > 0


def test_a_read_of_too_many_buckets_is_refused(history: Store) -> None:
    text = "avg_over_time(recorder_container_cpu_usage_cores[30000d])"
    with pytest.raises(QueryError, match="3 series x 720001 buckets of statistics"):
        at = T0 + 20_000 * DAY_MS - HOUR_MS  # the window starts after 1970
        range_query(StoreSource(history), text, at, at, HOUR_MS)

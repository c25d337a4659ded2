"""The step-aligned result cache (recorder.query.promql.cache): a refreshed dashboard's query
gives the uncached answer while only its new steps are evaluated; steps at or after the
source's horizon are never kept; a new generation empties it; it stays within its bytes."""

from __future__ import annotations

from collections.abc import Sequence

from recorder.api.prometheus_api import cache_scope
from recorder.api.visibility import Visible
from recorder.query.promql.cache import ResultCache
from recorder.query.promql.evaluation import range_query
from recorder.query.promql.matchers import Matcher
from recorder.query.promql.source import MemorySource
from recorder.query.promql.values import RawSeries
from recorder.query.promql.wire import result_data
from tests.promql_support import raw

MINUTE = 60_000
SERIES = [
    raw({"__name__": "m", "pod": f"p{i}"}, [(t * MINUTE, (t * (i + 3)) % 17) for t in range(600)])
    for i in range(3)
]
QUERIES = [
    "sum(m)",
    "max_over_time(m[10m])",
    'avg_over_time(m{pod="p1"}[7m]) * 2',
    "topk(1, m)",
    "scalar(sum(m))",
]


class Counted(MemorySource):
    """Memory with a horizon and a generation set by the test, counting its reads."""

    def __init__(self, series: Sequence[RawSeries]) -> None:
        super().__init__(series)
        self.horizon_ms = 10**15
        self.generation: tuple[int, ...] = (1,)
        self.reads: list[tuple[int, int]] = []

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[RawSeries]:
        self.reads.append((start_ms, end_ms))
        return super().select(matchers, start_ms, end_ms)

    def freshness(self) -> tuple[int, tuple[int, ...]]:
        return self.horizon_ms, self.generation


def test_a_sliding_window_reads_only_its_new_steps_and_answers_the_same() -> None:
    outcomes: list[str] = []
    cache = ResultCache(on_lookup=outcomes.append)
    source = Counted(SERIES)
    for text in QUERIES:
        for shift in (0, 5, 5, 60):
            start, end = (100 + shift) * MINUTE, (400 + shift) * MINUTE
            source.reads.clear()
            ours = cache.range_query(source, text, start, end, MINUTE, now_ms=0)
            expected = range_query(MemorySource(SERIES), text, start, end, MINUTE)
            assert result_data(ours) == result_data(expected), (text, shift)
            if outcomes[-1] == "partial":
                assert min(low for low, _high in source.reads) >= end - 75 * MINUTE
    assert outcomes[:4] == ["miss", "partial", "hit", "partial"]


def test_steps_at_the_horizon_or_later_are_not_kept() -> None:
    cache = ResultCache()
    source = Counted(SERIES)
    source.horizon_ms = 200 * MINUTE
    cache.range_query(source, "sum(m)", 100 * MINUTE, 300 * MINUTE, MINUTE, now_ms=0)
    source.reads.clear()
    cache.range_query(source, "sum(m)", 100 * MINUTE, 300 * MINUTE, MINUTE, now_ms=0)
    assert source.reads and source.reads[0][1] >= 200 * MINUTE  # from the horizon on
    assert min(high for _low, high in source.reads) >= 200 * MINUTE
    # A late sample moves the horizon back: the steps after it are read again.
    source.horizon_ms = 150 * MINUTE
    source.reads.clear()
    cache.range_query(source, "sum(m)", 100 * MINUTE, 300 * MINUTE, MINUTE, now_ms=0)
    assert min(high for _low, high in source.reads) == 300 * MINUTE
    assert min(low for low, _high in source.reads) <= 150 * MINUTE


def test_a_new_generation_or_age_empties_an_entry_and_at_is_never_cached() -> None:
    outcomes: list[str] = []
    cache = ResultCache(max_age_ms=MINUTE, on_lookup=outcomes.append)
    source = Counted(SERIES)
    for _ in range(2):
        cache.range_query(source, "sum(m)", 0, 60 * MINUTE, MINUTE, now_ms=0)
    source.generation = (2,)
    cache.range_query(source, "sum(m)", 0, 60 * MINUTE, MINUTE, now_ms=0)
    cache.range_query(source, "sum(m)", 0, 60 * MINUTE, MINUTE, now_ms=2 * MINUTE)
    cache.range_query(source, "sum(m @ 100)", 0, 60 * MINUTE, MINUTE, now_ms=0)
    cache.range_query(source, "sum(m offset -1m)", 0, 60 * MINUTE, MINUTE, now_ms=0)
    assert outcomes == ["miss", "hit", "miss", "miss", "bypass", "bypass"]


def test_the_cache_stays_within_its_bytes() -> None:
    cache = ResultCache(max_bytes=40_000)
    source = Counted(SERIES)
    for start in range(0, 200):
        cache.range_query(source, "m", start, start + 300 * MINUTE, MINUTE, now_ms=0)
        assert cache.size <= 40_000
    assert 1 <= len(cache) < 200
    big = ResultCache(max_bytes=4_000)
    big.range_query(source, "m", 0, 500 * MINUTE, MINUTE, now_ms=0)
    assert len(big) == 0  # larger than a quarter of the bound: not kept


def test_callers_that_see_different_series_never_share_an_entry() -> None:
    """Access control filters what a caller's source holds; its answers are cached under its
    scope (``prometheus_api.cache_scope``), apart from other views of the same query."""
    cache = ResultCache()
    everything, part = Counted(SERIES), Counted(SERIES[:1])
    start, end = 100 * MINUTE, 400 * MINUTE
    views = [
        (everything, SERIES, cache_scope(Visible())),
        (part, SERIES[:1], cache_scope(Visible(frozenset({"a"})))),
    ]
    for _round in range(2):
        for source, held, scope in views:
            ours = cache.range_query(source, "sum(m)", start, end, MINUTE, now_ms=0, scope=scope)
            expected = range_query(MemorySource(held), "sum(m)", start, end, MINUTE)
            assert result_data(ours) == result_data(expected), scope
    scopes = {cache_scope(Visible(frozenset(s))) for s in ((), ("a",), ("a", "b"), ("b",))}
    assert len(scopes | {cache_scope(Visible())}) == 5

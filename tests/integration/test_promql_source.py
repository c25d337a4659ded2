"""Selectors over the store (recorder.query.promql.source), on SQLite and PostgreSQL: the
exporter's names and labels with the pods' workloads, samples from the head and the chunks,
the equality matchers pushed into the series query, and the bounds."""

from __future__ import annotations

import pytest

from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.errors import QueryError
from recorder.query.promql.matchers import Matcher, MatchOp
from recorder.query.promql.source import StoreSource
from recorder.store import Store
from recorder.store.objects import ObjectStore

T0 = 1_714_521_600_000
HOUR = 3_600_000


def eq(name: str, value: str) -> Matcher:
    return Matcher.of(name, MatchOp.EQUAL, value)


@pytest.fixture
def history(store: Store) -> Store:
    """web-1/app (a Deployment's) and debug/shell (a bare pod) every minute for two hours, the
    first hour compacted; node n1 once."""
    for ts in range(T0, T0 + 2 * HOUR, 60_000):
        samples = [
            Sample(
                SeriesKey.for_container("shop", "web-1", "app"), ts, 30_000, 250_000_000, ts % 997
            ),
            Sample(SeriesKey.for_container("shop", "debug", "shell"), ts, 30_000, 1, 2),
        ]
        store.write(Batch(Kind.CONTAINER, samples), now_ms=ts)
    store.write(Batch(Kind.NODE, [Sample(SeriesKey.for_node("n1"), T0, 30_000, 3, 4)]), now_ms=T0)
    ObjectStore(store.engine, DEFAULT_CLUSTER).record_pods(
        [("shop", "web-1", "Deployment", "web", None)], now_ms=T0
    )
    store.maintain(now_ms=T0 + HOUR + 20 * 60_000)
    return store


def test_series_carry_the_exporters_names_and_the_workloads(history: Store) -> None:
    found = StoreSource(history).select(
        [eq("__name__", "recorder_container_cpu_usage_cores")], T0, T0 + 2 * HOUR
    )
    assert [dict(s.labels) for s in found] == [
        {
            "__name__": "recorder_container_cpu_usage_cores",
            "cluster": "default",
            "container": "app",
            "namespace": "shop",
            "pod": "web-1",
            "workload": "web",
            "workload_kind": "Deployment",
        },
        {
            "__name__": "recorder_container_cpu_usage_cores",
            "cluster": "default",
            "container": "shell",
            "namespace": "shop",
            "pod": "debug",
            "workload": "debug",
            "workload_kind": "Pod",
        },
    ]  # fmt: skip (sorted by label set: container app < shell)
    web = found[0]
    assert len(web.timestamps_ms) == 120  # the chunk's hour and the head's
    assert web.values.tolist() == [0.25] * 120


def test_matchers_on_any_label_and_on_the_name(history: Store) -> None:
    source = StoreSource(history)
    by_workload = source.select([eq("workload_kind", "Deployment")], T0, T0 + HOUR)
    assert {dict(s.labels)["__name__"] for s in by_workload} == {
        "recorder_container_cpu_usage_cores",
        "recorder_container_memory_working_set_bytes",
    }
    nodes = source.select([Matcher.of("__name__", MatchOp.REGEX, "recorder_node_.*")], T0, T0)
    assert [s.ints.tolist() for s in nodes] == [[3], [4]]
    assert source.select([eq("pod", "web-1"), eq("pod", "debug")], T0, T0 + HOUR) == []
    assert source.select([eq("node", "n1"), eq("pod", "web-1")], T0, T0 + HOUR) == []


def test_series_are_listed_by_first_and_last_seen(history: Store) -> None:
    source = StoreSource(history)
    name = [eq("__name__", "recorder_container_memory_working_set_bytes")]
    assert len(source.series(name, T0 + 2 * HOUR - 60_000, T0 + 3 * HOUR)) == 2  # head rows
    assert source.series(name, T0 + 3 * HOUR, T0 + 4 * HOUR) == []


def test_the_bounds_are_query_errors(history: Store) -> None:
    with pytest.raises(QueryError, match="more than 1 series"):
        StoreSource(history, max_series=1).select([eq("namespace", "shop")], T0, T0 + HOUR)
    with pytest.raises(QueryError, match="reads more than 100 samples"):
        StoreSource(history, max_samples=100).select([eq("pod", "web-1")], T0, T0 + 2 * HOUR)


def test_requests_and_limits_are_sampled_at_the_usage_samples(history: Store) -> None:
    objects = ObjectStore(history.engine, DEFAULT_CLUSTER)
    objects.record_containers(
        [("shop", "web-1", "app", 100_000_000, None, 2**20, None, 0, None)], now_ms=T0 + HOUR
    )
    source = StoreSource(history)
    (request,) = source.select(
        [eq("__name__", "recorder_container_cpu_request_cores")], T0, T0 + 2 * HOUR
    )
    assert dict(request.labels)["pod"] == "web-1"
    assert request.timestamps_ms.tolist() == list(range(T0 + HOUR, T0 + 2 * HOUR, 60_000))
    assert set(request.values.tolist()) == {0.1}
    assert (
        source.select([eq("__name__", "recorder_container_cpu_limit_cores")], T0, T0 + 2 * HOUR)
        == []
    )


def test_series_seen_outside_the_range_do_not_count_against_the_bound(history: Store) -> None:
    later = T0 + 3 * HOUR
    new = Sample(SeriesKey.for_container("shop", "new", "app"), later, 30_000, 5, 6)
    history.write(Batch(Kind.CONTAINER, [new]), now_ms=later)
    source = StoreSource(history, max_series=6)  # one container's usage, requests and limits
    (cpu, memory) = source.select([eq("pod", "new")], later - 60_000, later)
    assert cpu.ints.tolist() == [5] and memory.ints.tolist() == [6]
    # web-1 and debug ended two hours before: not counted, though the selector names them too
    found = source.select([eq("namespace", "shop")], later - 60_000, later)
    assert [dict(s.labels)["pod"] for s in found] == ["new", "new"]
    with pytest.raises(QueryError, match="more than 6 series"):
        source.select([eq("namespace", "shop")], T0, later)

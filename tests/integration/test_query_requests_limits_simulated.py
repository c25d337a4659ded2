"""Usage beside requests and limits against the simulator's model, on both databases: a
simulated cluster with pods replaced as it goes is recorded through the real poll path and
cluster-object reader over HTTP (``tests.recommend_support``), and every container's and pod's
``with_requests`` history equals what the simulator served, read apart from the recorder: the
usage at each sample, the request and limit the pod's spec showed from the poll the recorder
first saw it at (unknown before: the simulator stamps a sample with the poll's instant, so
none falls before here; ``test_query_requests_limits`` covers it), a pod's request the sum
over its containers (unset counts 0) and its limit unlimited (``None``) when a container has
none."""

from __future__ import annotations

import pytest

from recorder.domain import HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.query import engine
from recorder.store import Store
from tests.recommend_support import T0, ContainerKey, Recorded, recorded_cluster

STEPS = 20


def history(store: Store, kind: QueryKind, resource: Resource, end_ms: int) -> list:  # type: ignore[type-arg]
    result = engine.history(
        store,
        HistoryQuery(resource, SeriesFilter(kind), round(T0 * 1000), end_ms),
        max_points=10**6,
        with_requests=True,
    )
    return list(result.series)


def served(
    recorded: Recorded, key: ContainerKey, resource: Resource
) -> tuple[int | None, int | None]:
    """The request (unset: 0) and limit (unset: None) the simulator's spec of ``key`` shows."""
    cpu_request, cpu_limit, memory_request, memory_limit = recorded.resources[key]
    if resource is Resource.CPU:
        return cpu_request or 0, cpu_limit
    return memory_request or 0, memory_limit


@pytest.mark.parametrize("resource", list(Resource))
def test_each_container_s_usage_request_and_limit_are_what_the_simulator_served(
    store: Store, resource: Resource
) -> None:
    value_at = 0 if resource is Resource.CPU else 1
    with recorded_cluster(store, steps=STEPS) as recorded:
        found = history(store, QueryKind.CONTAINER, resource, recorded.end_ms)
    assert len(found) == len(recorded.samples) > 40  # pods were replaced while recording
    known = 0
    for series in found:
        labels = series.labels
        key = (labels["namespace"], labels["pod"], labels["container"])
        samples = recorded.samples[key]
        assert series.points == [(ts, samples[ts][value_at]) for ts in sorted(samples)]
        request, limit = served(recorded, key, resource)
        seen = recorded.first_seen[key[:2]]
        assert series.request == [request if ts >= seen else None for ts, _v in series.points]
        assert series.limit == [limit if ts >= seen else None for ts, _v in series.points]
        known += sum(ts >= seen for ts, _v in series.points)
    assert known > 0


@pytest.mark.parametrize("resource", list(Resource))
def test_each_pod_s_usage_request_and_limit_sum_its_containers(
    store: Store, resource: Resource
) -> None:
    value_at = 0 if resource is Resource.CPU else 1
    with recorded_cluster(store, steps=STEPS) as recorded:
        found = history(store, QueryKind.POD, resource, recorded.end_ms)
    pods = {key[:2] for key in recorded.samples}
    assert {(s.labels["namespace"], s.labels["pod"]) for s in found} == pods
    unlimited = 0
    for series in found:
        pod = (series.labels["namespace"], series.labels["pod"])
        containers = sorted(key for key in recorded.samples if key[:2] == pod)
        stamps = sorted({ts for key in containers for ts in recorded.samples[key]})
        assert series.points == [
            (
                ts,
                sum(
                    recorded.samples[key][ts][value_at]
                    for key in containers
                    if ts in recorded.samples[key]
                ),
            )
            for ts in stamps
        ]
        values = [served(recorded, key, resource) for key in containers]
        request = sum(r for r, _l in values)
        limits = [lim for _r, lim in values]
        limit = None if None in limits else sum(lim for lim in limits if lim is not None)
        unlimited += limit is None
        seen = recorded.first_seen[pod]
        assert series.request == [request if ts >= seen else None for ts in stamps]
        assert series.limit == [limit if ts >= seen else None for ts in stamps]
    assert 0 < unlimited < len(found)  # both kinds of pod met

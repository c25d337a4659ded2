"""Usage next to requests and limits (``recorder.query.requests_limits`` through the engine,
HTTP and ``recorder query``) on both databases: a container's values in effect at each point,
a pod's sum over its containers (a missing limit is no limit), a workload's sum over the pods
its value counts at each instant across a rollout, and an in-place change; against a
reference computed from the model in the test."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.cli import main
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
from recorder.errors import QueryError
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query import engine
from recorder.store import Store
from recorder.store.objects import ObjectStore
from tests.servers import serving

T0 = 1_714_521_600_000
INTERVAL = 30_000
END = T0 + 10 * 60_000
M = 10**6  # nanocores per millicore
MI = 2**20
# pod -> (first sample, last sample, offset)
PODS = {"web-a": (T0 + 5_000, T0 + 6 * 60_000 + 5_000), "web-b": (T0 + 4 * 60_000 + 17_000, END)}
RESIZE = T0 + 2 * 60_000 + 10_000
# (pod, container) -> [(since, cpu request, cpu limit, memory request, memory limit)]
ROWS = {
    ("web-a", "app"): [
        (T0 + 60_000, 100 * M, 200 * M, 64 * MI, 128 * MI),
        (RESIZE, 150 * M, 200 * M, 64 * MI, 128 * MI),
    ],
    ("web-a", "sidecar"): [(T0 + 60_000, 10 * M, None, 16 * MI, 16 * MI)],
    ("web-b", "app"): [(T0 + 4 * 60_000 + 17_000, 300 * M, 400 * M, 96 * MI, 128 * MI)],
    ("web-b", "sidecar"): [(T0 + 4 * 60_000 + 17_000, None, None, 16 * MI, 32 * MI)],
}


def stamps_of(pod: str) -> list[int]:
    first, last = PODS[pod]
    return list(range(first, last + 1, INTERVAL))


@pytest.fixture
def web(store: Store) -> Store:
    found = [
        Sample(SeriesKey.for_container("shop", pod, c), ts, INTERVAL, 50 * M, 10 * MI)
        for pod in PODS
        for ts in stamps_of(pod)
        for c in ("app", "sidecar")
    ]
    found.sort(key=lambda s: s.timestamp_ms)
    store.write(Batch(Kind.CONTAINER, found), now_ms=END)
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    objects.record_pods([("shop", p, "Deployment", "web", None) for p in PODS], now_ms=T0)
    for (pod, container), rows in ROWS.items():
        for since, *values in rows:
            objects.record_containers([("shop", pod, container, *values, 0, None)], now_ms=since)
    return store


def at(pod: str, container: str, ts: int, column: int) -> tuple[bool, int | None]:
    """(known, value) of a container's column (1..4 as in ROWS) at ``ts``."""
    rows = [r for r in ROWS[(pod, container)] if r[0] <= ts]
    if not rows:
        return False, None
    return True, rows[-1][column]


def pod_value(pod: str, containers: tuple[str, ...], ts: int, limit: bool) -> int | None:
    column = 2 if limit else 1
    total = 0
    for c in containers:
        known, value = at(pod, c, ts, column)
        if not known or (limit and value is None):
            return None
        total += value or 0
    return total


def history(store: Store, where: SeriesFilter, **kw: object) -> dict[str, object]:
    query = HistoryQuery(Resource.CPU, where, T0, END, kw.pop("step", None), Agg.MAX)  # type: ignore[arg-type]
    result = engine.history(
        store, query, max_points=10**5, interval_ms=INTERVAL, with_requests=True
    )
    return {"/".join(s.labels.values()): s for s in result.series}


def test_a_containers_values_at_each_point(web: Store) -> None:
    found = history(web, SeriesFilter(QueryKind.CONTAINER, pod="web-a", container="app"))
    (series,) = found.values()
    stamps = [ts for ts, _ in series.points]  # type: ignore[attr-defined]
    assert stamps == stamps_of("web-a")
    assert series.request == [at("web-a", "app", ts, 1)[1] for ts in stamps]  # type: ignore[attr-defined]
    assert series.request[0] is None  # before the first row: not known
    assert series.request[-1] == 150 * M  # the resize
    assert series.limit == [at("web-a", "app", ts, 2)[1] for ts in stamps]  # type: ignore[attr-defined]


def test_a_pods_sum_over_its_containers(web: Store) -> None:
    for pod in PODS:
        (series,) = history(web, SeriesFilter(QueryKind.POD, pod=pod)).values()
        stamps = [ts for ts, _ in series.points]  # type: ignore[attr-defined]
        both = ("app", "sidecar")
        assert series.request == [pod_value(pod, both, ts, False) for ts in stamps]  # type: ignore[attr-defined]
        # web-a's sidecar has no CPU limit: the pod has none; web-b's neither.
        assert series.limit == [None] * len(stamps)  # type: ignore[attr-defined]
    (series,) = history(web, SeriesFilter(QueryKind.POD, pod="web-a"), step=5 * 60_000).values()
    # With a step: at the end of each bucket.
    assert series.request == [160 * M, 160 * M]  # type: ignore[attr-defined]


def counted(pod: str, t: int) -> bool:
    return any(t - 2 * INTERVAL < ts <= t for ts in stamps_of(pod))


@pytest.mark.parametrize("container", [None, "app"])
def test_a_workloads_sum_over_the_pods_it_counts_across_a_rollout(
    web: Store, container: str | None
) -> None:
    where = SeriesFilter(QueryKind.WORKLOAD, workload="web", container=container)
    (series,) = history(web, where).values()
    stamps = [ts for ts, _ in series.points]  # type: ignore[attr-defined]
    containers = (container,) if container else ("app", "sidecar")
    for limit, got in ((False, series.request), (True, series.limit)):  # type: ignore[attr-defined]
        expected = []
        for t in stamps:
            values = [pod_value(p, containers, t, limit) for p in PODS if counted(p, t)]
            expected.append(None if None in values else sum(v or 0 for v in values))
        assert got == expected
    if container == "app":
        both = [t for t in stamps if counted("web-a", t) and counted("web-b", t)]
        assert both and series.limit[stamps.index(both[0])] == 600 * M  # type: ignore[attr-defined]
        assert series.limit[-1] == 400 * M  # type: ignore[attr-defined]


def test_nodes_have_no_requests(web: Store) -> None:
    with pytest.raises(QueryError, match="requests and limits belong to containers"):
        history(web, SeriesFilter(QueryKind.NODE))


@pytest.fixture
def api(web: Store) -> Iterator[httpx.Client]:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(web, registry, clock=lambda: END / 1000, interval_ms=INTERVAL)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_http_with_requests(api: httpx.Client) -> None:
    base = {"resource": "cpu", "pod": "web-a", "container": "app", "start": T0 / 1000}
    plain = api.get("/api/v1/history", params=base).json()["data"]["series"][0]
    assert set(plain) == {"labels", "points"}  # the existing shape, unless asked
    data = api.get("/api/v1/history", params={**base, "with_requests": "true"}).json()["data"]
    (series,) = data["series"]
    assert series["request"][0] == [series["points"][0][0], None]
    assert series["request"][-1] == [series["points"][-1][0], 0.15]
    assert series["limit"][-1] == [series["points"][-1][0], 0.2]
    text = api.get(
        "/api/v1/history", params={**base, "with_requests": "true", "format": "csv"}
    ).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][-3:] == ["cpu_cores", "cpu_request_cores", "cpu_limit_cores"]
    assert rows[1][-2:] == ["", ""] and rows[-1][-2:] == ["0.15", "0.2"]
    bad = api.get(
        "/api/v1/history", params={"resource": "cpu", "kind": "node", "with_requests": "1"}
    )
    assert bad.status_code == 400


def test_recorder_query_with_requests(
    web: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "query",
            "--database-url",
            database_url,
            "--resource",
            "memory",
            "--kind",
            "workload",
            "--workload",
            "web",
            "--with-requests",
            "--interval",
            "30s",
            "--start",
            str(T0 / 1000),
            "--end",
            str(END / 1000),
            "--step",
            "5m",
            "--agg",
            "max",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][-4:] == ["TIME", "MEMORY", "REQUEST", "LIMIT"]
    # The first bucket's last instant (04:30) counts both pods (web-b since 04:17): 80Mi +
    # 112Mi requested, 144Mi + 160Mi limit; the second's (10:00) web-b only.
    assert lines[1][-2:] == ["192Mi", "304Mi"]
    assert lines[2][-2:] == ["112Mi", "160Mi"]

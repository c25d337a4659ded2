"""``kind=workload`` (``recorder.query.workload_sums`` through the engine) on both databases:
each workload is the sum of its pods, aligned as PromQL aligns series that report at
different instants (each pod's newest sample within two poll intervals of each instant),
continuous across a rollout that renames every pod, per container name, through the engine,
HTTP and ``recorder query``; ``recorder top workloads`` and ``group_by=workload``; and the
``workload`` filters of the other kinds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction

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

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
INTERVAL = 30_000
LOOKBACK = 2 * INTERVAL
END = T0 + 20 * 60_000
ROLLOUT = T0 + 10 * 60_000
# pod -> (first sample, last sample, offset within the interval): pods report at different
# instants; the new pods start before the old ones stop (a rolling update).
PODS = {
    "web-a-1": (T0 + 7_000, ROLLOUT + 60_000, 7_000),
    "web-a-2": (T0 + 19_000, ROLLOUT + 90_000, 19_000),
    "web-b-1": (ROLLOUT + 3_000, END, 3_000),
    "web-b-2": (ROLLOUT + 41_000, END, 11_000),
}
CONTAINERS = ("app", "sidecar")


def cpu(pod: str, container: str, ts: int) -> int:
    return (hash((pod, container)) % 1000 + 1) * 1_000_000 + (ts // 1000) % 997


def memory(pod: str, container: str, ts: int) -> int:
    return (len(pod) * 10 + len(container)) * 2**20 + (ts // 1000) % 7919


def samples() -> list[Sample]:
    out = []
    for pod, (first, last, _offset) in PODS.items():
        ts = first
        while ts <= last:
            if not (pod == "web-a-1" and T0 + 120_000 <= ts < T0 + 180_000):  # a missed poll
                out.extend(
                    Sample(
                        SeriesKey.for_container("shop", pod, c),
                        ts,
                        30_000,
                        cpu(pod, c, ts),
                        memory(pod, c, ts),
                    )
                    for c in CONTAINERS
                )
            ts += INTERVAL
    return sorted(out, key=lambda s: s.timestamp_ms)


@pytest.fixture
def web(store: Store) -> Store:
    found = samples()
    labels = {("shop", p): {"app": "web"} for p in PODS}
    for begin in range(0, len(found), 40):
        part = found[begin : begin + 40]
        store.write(Batch(Kind.CONTAINER, part, pod_labels=labels), now_ms=part[-1].timestamp_ms)
    store.write(
        Batch(Kind.CONTAINER, [Sample(SeriesKey.for_container("shop", "lone", "x"), T0, 1, 5, 6)]),
        now_ms=T0,
    )
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    objects.record_pods([("shop", p, "Deployment", "web", None) for p in PODS], now_ms=T0)
    return store


def reference(
    resource: Resource, start: int, end: int, containers: tuple[str, ...] = CONTAINERS
) -> list[tuple[int, int]]:
    """The sum at each multiple of the interval of each pod's newest sample in
    (t - lookback, t], from the model, not from the store."""
    value = cpu if resource is Resource.CPU else memory
    stamps = {(s.key.pod, s.timestamp_ms) for s in samples()}
    points = []
    t = -(-start // INTERVAL) * INTERVAL
    while t <= end:
        total, any_pod = 0, False
        for pod in PODS:
            newest = max(
                (ts for p, ts in stamps if p == pod and t - LOOKBACK < ts <= t), default=None
            )
            if newest is not None:
                total += sum(value(pod, c, newest) for c in containers)
                any_pod = True
        if any_pod:
            points.append((t, total))
        t += INTERVAL
    return points


WORKLOAD = SeriesFilter(
    QueryKind.WORKLOAD, namespace="shop", workload_kind="deployment", workload="web"
)
LABELS = {
    "cluster": DEFAULT_CLUSTER,
    "namespace": "shop",
    "workload_kind": "Deployment",
    "workload": "web",
}


def history(
    store: Store, query: HistoryQuery, **kw: int
) -> dict[tuple[str, ...], list[tuple[int, object]]]:
    result = engine.history(store, query, max_points=10**5, interval_ms=INTERVAL, **kw)
    return {tuple(s.labels.values()): list(s.points) for s in result.series}


@pytest.mark.parametrize("resource", list(Resource))
def test_a_workload_is_its_pods_aligned_sum_continuous_across_a_rollout(
    web: Store, resource: Resource
) -> None:
    found = history(web, HistoryQuery(resource, WORKLOAD, T0, END))
    (points,) = found.values()
    assert list(found) == [tuple(LABELS.values())]
    assert points == reference(resource, T0, END)
    # Every instant from the first pod's first sample to the end has a value: no gap at the
    # rollout (every pod renamed), nor at the missed poll (the lookback bridges it).
    stamps = [t for t, _ in points]
    assert stamps == list(range(T0 + 30_000, END + 1, INTERVAL))
    before, after = dict(points)[ROLLOUT - 60_000], dict(points)[END]
    assert before > 0 and after > 0


def test_steps_aggregate_the_aligned_instants(web: Store) -> None:
    ref = reference(Resource.CPU, T0, END)
    found = history(web, HistoryQuery(Resource.CPU, WORKLOAD, T0, END, 5 * 60_000, Agg.MAX))
    (points,) = found.values()
    expected: dict[int, int] = {}
    for t, v in ref:
        bucket = t - t % (5 * 60_000)
        expected[bucket] = max(expected.get(bucket, 0), v)
    assert points == sorted(expected.items())
    # A step of the interval: each point is the sum at its instant (PromQL's range query).
    found = history(web, HistoryQuery(Resource.CPU, WORKLOAD, T0, END, INTERVAL, Agg.AVG))
    assert [(t, int(v)) for t, v in next(iter(found.values()))] == ref  # type: ignore[call-overload]
    # A shorter step than the interval evaluates at each step.
    short = history(
        web, HistoryQuery(Resource.CPU, WORKLOAD, ROLLOUT, ROLLOUT + 60_000, 10_000, Agg.LAST)
    )
    (points,) = short.values()
    assert [t for t, _ in points] == list(range(ROLLOUT, ROLLOUT + 60_001, 10_000))


def test_one_container_name_across_the_workloads_pods(web: Store) -> None:
    where = SeriesFilter(QueryKind.WORKLOAD, namespace="shop", container="app")
    found = history(web, HistoryQuery(Resource.MEMORY, where, T0, END))
    assert list(found) == [(*LABELS.values(), "app")]
    assert found[(*LABELS.values(), "app")] == reference(Resource.MEMORY, T0, END, ("app",))


def test_a_pod_without_a_workload_row_is_its_own_workload(web: Store) -> None:
    where = SeriesFilter(QueryKind.WORKLOAD, namespace="shop", workload_kind="Pod")
    found = history(web, HistoryQuery(Resource.CPU, where, T0, T0 + 60_000))
    # One sample counts at each instant within the lookback after it: (T0, T0 + 60 s] is out.
    assert found == {(DEFAULT_CLUSTER, "shop", "Pod", "lone"): [(T0, 5), (T0 + INTERVAL, 5)]}


def test_workload_filters_of_the_other_kinds(web: Store) -> None:
    where = SeriesFilter(QueryKind.POD, namespace="shop", workload="web")
    found = history(web, HistoryQuery(Resource.CPU, where, T0, END))
    assert sorted(p for _c, _ns, p in found) == sorted(PODS)
    where = SeriesFilter(QueryKind.CONTAINER, workload_kind="Pod")
    assert list(history(web, HistoryQuery(Resource.CPU, where, T0, END))) == [
        (DEFAULT_CLUSTER, "shop", "lone", "x")
    ]


def test_bad_filters_and_bounds_are_query_errors(web: Store) -> None:
    for where in (
        SeriesFilter(QueryKind.WORKLOAD, pod="web-a-1"),
        SeriesFilter(QueryKind.WORKLOAD, node="n"),
        SeriesFilter(QueryKind.NODE, workload="web"),
    ):
        with pytest.raises(QueryError):
            history(web, HistoryQuery(Resource.CPU, where, T0, END))
    with pytest.raises(QueryError, match="points"):
        engine.history(
            web, HistoryQuery(Resource.CPU, WORKLOAD, T0, END), max_points=10, interval_ms=INTERVAL
        )
    with pytest.raises(QueryError, match="computed from its pods' samples"):
        history(web, HistoryQuery(Resource.CPU, WORKLOAD, T0, END), max_samples=100)
    with pytest.raises(QueryError, match="instants"):
        history(web, HistoryQuery(Resource.CPU, WORKLOAD, T0, END), max_samples=10)


@pytest.fixture
def api(web: Store) -> Iterator[httpx.Client]:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(web, registry, clock=lambda: END / 1000, interval_ms=INTERVAL, max_points=1000)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_http_kind_workload(api: httpx.Client) -> None:
    response = api.get(
        "/api/v1/history",
        params={
            "resource": "cpu",
            "kind": "workload",
            "workload_kind": "Deployment",
            "workload": "web",
            "start": T0 / 1000,
            "end": END / 1000,
        },
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["kind"] == "workload"
    (series,) = data["series"]
    assert series["labels"] == LABELS
    assert series["points"] == [[t / 1000, v / 1e9] for t, v in reference(Resource.CPU, T0, END)]
    bad = api.get("/api/v1/history", params={"resource": "cpu", "kind": "workload", "pod": "x"})
    assert bad.status_code == 400
    assert "kind=workload" in bad.json()["error"]


def test_recorder_query_kind_workload(web: Store, database_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recorder",
            "query",
            "--database-url",
            database_url,
            "--resource",
            "memory",
            "--kind",
            "workload",
            "--workload",
            "web",
            "--interval",
            "30s",
            "--start",
            str(T0 // 1000),
            "--end",
            str(END // 1000),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (series,) = json.loads(done.stdout)["data"]["series"]
    assert series["points"] == [[t / 1000, v] for t, v in reference(Resource.MEMORY, T0, END)]


# --- top workloads and group_by=workload ------------------------------------------------------


def test_top_workloads_aggregate_the_aligned_sum_over_the_window(web: Store) -> None:
    where = SeriesFilter(QueryKind.WORKLOAD, namespace="shop")
    for agg, of in ((Agg.MAX, max), (Agg.MIN, min)):
        rows = engine.top(web, where, T0, END, agg, interval_ms=INTERVAL)
        assert [r.labels for r in rows] == [
            LABELS,
            {**LABELS, "workload_kind": "Pod", "workload": "lone"},
        ]
        assert rows[0].cpu == of(v for _, v in reference(Resource.CPU, T0, END))
        assert rows[0].memory == of(v for _, v in reference(Resource.MEMORY, T0, END))
    (row, _lone) = engine.top(web, where, T0, END, Agg.AVG, interval_ms=INTERVAL)
    ref = [v for _, v in reference(Resource.CPU, T0, END)]
    assert row.cpu == Fraction(sum(ref), len(ref))
    only_web = SeriesFilter(QueryKind.WORKLOAD, workload="web")
    split = engine.top(web, only_web, T0, END, Agg.MAX, containers=True, interval_ms=INTERVAL)
    assert [r.labels["container"] for r in split] == list(CONTAINERS)
    for r in split:
        assert r.cpu == max(
            v for _, v in reference(Resource.CPU, T0, END, (r.labels["container"],))
        )


def test_summary_grouped_by_workload(web: Store) -> None:
    for kind in (QueryKind.POD, QueryKind.CONTAINER):
        groups = engine.summarize(
            web, SeriesFilter(kind, namespace="shop"), "workload", T0, END, max_groups=10
        )
        assert [g.group for g in groups] == ["shop/Deployment/web", "shop/Pod/lone"]
        web_group = groups[0]
        assert web_group.series == len(PODS) * len(CONTAINERS)
        assert web_group.cpu is not None
        if kind is QueryKind.CONTAINER:
            assert web_group.cpu.max == max(
                cpu(s.key.pod, s.key.container, s.timestamp_ms) for s in samples()
            )
        else:
            stamps = {(s.key.pod, s.timestamp_ms) for s in samples()}
            assert web_group.cpu.max == max(
                sum(cpu(p, c, ts) for c in CONTAINERS) for p, ts in stamps if p in PODS
            )
    with pytest.raises(QueryError):
        engine.summarize(web, SeriesFilter(QueryKind.NODE), "workload", T0, END, max_groups=10)
    with pytest.raises(QueryError):
        engine.summarize(web, SeriesFilter(QueryKind.WORKLOAD), "namespace", T0, END, max_groups=10)


def test_http_summary_group_by_workload(api: httpx.Client) -> None:
    response = api.get(
        "/api/v1/summary",
        params={"group_by": "workload", "namespace": "shop", "start": T0 / 1000, "end": END / 1000},
    )
    assert response.status_code == 200, response.text
    assert [g["group"] for g in response.json()["data"]["groups"]] == [
        "shop/Deployment/web",
        "shop/Pod/lone",
    ]
    bad = api.get("/api/v1/summary", params={"group_by": "workload", "kind": "node"})
    assert bad.status_code == 400
    bad = api.get("/api/v1/summary", params={"group_by": "pod", "kind": "workload"})
    assert bad.status_code == 400


def test_recorder_top_workloads(
    web: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def top(*args: str) -> tuple[int, str, str]:
        code = main(
            [
                "top",
                *args,
                "--database-url",
                database_url,
                "--since",
                "20m",
                "--end",
                str(END / 1000),
                "--interval",
                "30s",
            ]
        )
        out, err = capsys.readouterr()
        return code, out, err

    peak_cpu = max(v for _, v in reference(Resource.CPU, T0, END))
    peak_memory = max(v for _, v in reference(Resource.MEMORY, T0, END))
    code, out, err = top("workloads", "-n", "shop", "--agg", "max")
    assert code == 0, err
    header, first, second = out.splitlines()
    assert header.split() == ["KIND", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert first.split() == [
        "Deployment",
        "web",
        f"{-(-peak_cpu // 10**6)}m",
        f"{peak_memory // 2**20}Mi",
    ]
    assert second.split()[:2] == ["Pod", "lone"]
    code, out, _ = top(
        "workload", "web", "-n", "shop", "--containers", "-o", "json", "--agg", "max"
    )
    assert code == 0
    assert [(r["workload"], r["container"]) for r in json.loads(out)] == [
        ("web", "app"),
        ("web", "sidecar"),
    ]
    code, out, _ = top("workloads", "-A", "--workload-kind", "deployment", "-o", "csv")
    assert code == 0
    assert (
        out.splitlines()[0]
        == "cluster,namespace,workload_kind,workload,agg,start,end,cpu_cores,memory_bytes"
    )
    assert len(out.splitlines()) == 2
    code, _out, err = top("pods", "-n", "shop", "--workload-kind", "Job")
    assert code != 0 and "--workload-kind goes with top workload" in err


def test_series_of_kind_workload(web: Store, api: httpx.Client) -> None:
    found = engine.list_series(web, SeriesFilter(QueryKind.WORKLOAD, namespace="shop"), limit=10)
    assert [info.labels for info in found] == [
        LABELS,
        {**LABELS, "workload_kind": "Pod", "workload": "lone"},
    ]
    stamps = [s.timestamp_ms for s in samples()]
    assert (found[0].first_seen_ms, found[0].last_seen_ms) == (min(stamps), max(stamps))
    listed = api.get("/api/v1/series", params={"kind": "workload", "workload": "web"}).json()
    assert [entry["labels"] for entry in listed["data"]] == [LABELS]


def test_top_a_workload_that_is_not_there_says_so(
    web: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["top", "workload", "nope", "-n", "shop", "--database-url", database_url])
    _out, err = capsys.readouterr()
    assert code == 2
    assert "no metrics recorded for workload 'nope' in namespace shop" in err


def test_the_pod_instants_a_workload_query_evaluates_are_bounded(web: Store) -> None:
    pods = [f"many-{i}" for i in range(6)]
    web.write(
        Batch(
            Kind.CONTAINER,
            [
                Sample(SeriesKey.for_container("shop", pod, "c"), ts, 30_000, 1, 1)
                for ts in (T0, END)
                for pod in pods
            ],
        ),
        now_ms=END,
    )
    ObjectStore(web.engine, DEFAULT_CLUSTER).record_pods(
        [("shop", pod, "Deployment", "many", None) for pod in pods], now_ms=T0
    )
    where = SeriesFilter(QueryKind.WORKLOAD, workload="many")
    # 1,201 instants of one workload and 12 samples, but six pods spanning them all: 7,206
    # pod-instants with a lookback of the whole range (an interval of 10 minutes).
    query = HistoryQuery(Resource.CPU, where, T0, END, 1000, Agg.MAX)
    long_interval = {"interval_ms": 600_000}
    found = engine.history(web, query, max_points=10**5, max_samples=2000, **long_interval)
    assert len(found.series[0].points) == 1201
    with pytest.raises(QueryError, match="pod-instants"):
        engine.history(web, query, max_points=10**5, max_samples=1300, **long_interval)

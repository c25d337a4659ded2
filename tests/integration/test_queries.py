"""History aggregations against references computed here from the raw samples, on SQLite and
PostgreSQL, across chunk boundaries and the head/chunk seam, through the store and over HTTP."""

from __future__ import annotations

import csv
import io
import random
import statistics
from collections.abc import Iterator
from datetime import datetime
from fractions import Fraction

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
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
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query import engine
from recorder.selectors import parse_label_selector
from recorder.stats.sketch import RELATIVE_ACCURACY, exact_quantile
from recorder.store import Store, open_store
from tests.servers import serving

HOUR = 3_600_000
T0 = 1_714_521_600_000  # a block boundary
STEP = 15_000
END = T0 + 3 * HOUR + 20 * 60_000
PODS = {
    ("shop", "web"): (["app", "sidecar"], {"app": "web", "tier": "front"}),
    ("shop", "cart"): (["app"], {"app": "cart", "tier": "front", "canary": ""}),
    ("data", "db"): (["postgres"], {"app": "db", "tier": "back"}),
}
NODES = ["n1", "10.0.0.7"]


def generate() -> list[Sample]:
    rng = random.Random(42)
    samples = []
    for ts in range(T0, END, STEP):
        for n, node in enumerate(NODES):
            if rng.random() < 0.04:
                continue
            offset = 1_000 * n + 7  # each node is scraped at its own phase of the resolution
            samples.append(
                Sample(
                    SeriesKey.for_node(node),
                    ts + offset,
                    30_000,
                    rng.randrange(0, 8 * 10**9),
                    rng.randrange(2**30, 2**34),
                )
            )
        for p, ((namespace, pod), (containers, _labels)) in enumerate(PODS.items()):
            if rng.random() < 0.04:
                continue
            stamp = ts + 1_500 * p + 300
            for container in containers:
                cpu = 0 if rng.random() < 0.1 else rng.randrange(1, 2 * 10**9)
                samples.append(
                    Sample(
                        SeriesKey.for_container(namespace, pod, container),
                        stamp,
                        30_000,
                        cpu,
                        rng.randrange(10**6, 10**9) * 4096,
                    )
                )
    return samples


SAMPLES = generate()


@pytest.fixture(scope="module")
def dbs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Store]]:
    """Both databases, written through polls and then compacted up to 3 h (the last 20 minutes
    stay in the head)."""
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('q') / 'q.db'}"
    stores = {"sqlite": open_store(sqlite_url)}
    import uuid

    import sqlalchemy

    from tests.conftest import POSTGRES_ADMIN_URL

    name = f"recorder_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    pg_url = sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)
    stores["postgresql"] = open_store(pg_url.render_as_string(hide_password=False))
    for store in stores.values():
        store.migrate()
        by_ts: dict[int, list[Sample]] = {}
        for sample in SAMPLES:
            by_ts.setdefault(sample.timestamp_ms // STEP, []).append(sample)
        for bucket in sorted(by_ts):
            batch = by_ts[bucket]
            store.write(
                Batch(Kind.NODE, tuple(s for s in batch if s.key.kind is Kind.NODE)), now_ms=0
            )
            store.write(
                Batch(
                    Kind.CONTAINER,
                    tuple(s for s in batch if s.key.kind is Kind.CONTAINER),
                    {ref: labels for ref, (_c, labels) in PODS.items()},
                ),
                now_ms=0,
            )
        store.maintain(now_ms=END, grace_ms=10 * 60_000)
    yield stores
    for store in stores.values():
        store.close()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# --- the reference, computed from SAMPLES alone ------------------------------------------------


def reference_series(
    kind: QueryKind,
    resource: Resource,
    start: int,
    end: int,
    labels: dict[tuple[str, str], dict[str, str]] | None = None,
    selector: str | None = None,
) -> dict[tuple[str, ...], dict[int, int]]:
    wanted = parse_label_selector(selector) if selector else None
    out: dict[tuple[str, ...], dict[int, int]] = {}
    for s in SAMPLES:
        if not start <= s.timestamp_ms <= end:
            continue
        if (s.key.kind is Kind.NODE) != (kind is QueryKind.NODE):
            continue
        if wanted is not None and not wanted.matches(PODS[(s.key.namespace, s.key.pod)][1]):
            continue
        value = s.cpu_nanocores if resource is Resource.CPU else s.memory_bytes
        # Every output series is labelled with its cluster first; SAMPLES are all the default's.
        if kind is QueryKind.NODE:
            ident: tuple[str, ...] = (DEFAULT_CLUSTER, s.key.node)
        elif kind is QueryKind.POD:
            ident = (DEFAULT_CLUSTER, s.key.namespace, s.key.pod)
        else:
            ident = (DEFAULT_CLUSTER, s.key.namespace, s.key.pod, s.key.container)
        points = out.setdefault(ident, {})
        points[s.timestamp_ms] = points.get(s.timestamp_ms, 0) + value
    return out


def reference_agg(values: list[int], agg: Agg) -> int | Fraction | float:
    if agg.quantile is not None:
        return exact_quantile(values, agg.quantile)
    if agg is Agg.STDDEV:
        return statistics.pstdev(values)
    return {
        Agg.AVG: Fraction(sum(values), len(values)),
        Agg.MIN: min(values),
        Agg.MAX: max(values),
        Agg.SUM: sum(values),
        Agg.COUNT: len(values),
        Agg.LAST: values[-1],
    }[agg]


def reference(
    kind: QueryKind,
    resource: Resource,
    start: int,
    end: int,
    step: int,
    agg: Agg,
    selector: str | None = None,
) -> dict[tuple[str, ...], list[tuple[int, object]]]:
    out = {}
    for ident, points in reference_series(kind, resource, start, end, selector=selector).items():
        buckets: dict[int, list[int]] = {}
        for ts in sorted(points):
            buckets.setdefault(ts - ts % step, []).append(points[ts])
        out[ident] = [(b, reference_agg(v, agg)) for b, v in sorted(buckets.items())]
    return out


def run(
    store: Store,
    kind: QueryKind,
    resource: Resource,
    start: int,
    end: int,
    step: int | None,
    agg: Agg,
    selector: str | None = None,
):
    where = SeriesFilter(kind, selector=parse_label_selector(selector) if selector else None)
    result = engine.history(
        store, HistoryQuery(resource, where, start, end, step, agg), max_points=10**6
    )
    return result, {tuple(s.labels.values()): s.points for s in result.series}


SERIES_KINDS = [QueryKind.NODE, QueryKind.CONTAINER, QueryKind.POD]
"""The kinds this reference models (kind=workload: test_query_engine_workloads.py)."""

CASES = [
    # start, end, step: cut blocks mid-way, cross chunk boundaries and the head/chunk seam
    (T0 + 25 * 60_000, T0 + 3 * HOUR + 10 * 60_000, 60_000),
    (T0 + 25 * 60_000, T0 + 3 * HOUR + 10 * 60_000, HOUR),
    (T0, END, 2 * HOUR),
    # both ends exactly on samples (node n1's phase is +7 ms, pod cart's +1800 ms): inclusive
    (T0 + 1_800, T0 + 2 * HOUR + 7, 7 * 60_000),
]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize("kind", SERIES_KINDS)
@pytest.mark.parametrize("case", CASES, ids=["1m", "1h", "2h", "7m"])
def test_aggregations_match_the_reference(
    dbs: dict[str, Store], database: str, kind: QueryKind, case: tuple[int, int, int]
) -> None:
    start, end, step = case
    for resource in Resource:
        for agg in Agg:
            result, found = run(dbs[database], kind, resource, start, end, step, agg)
            expected = reference(kind, resource, start, end, step, agg)
            assert found.keys() == expected.keys()
            # A step that is a multiple of the block (1 h) goes to block statistics, for pods
            # (their own statistics series) as for nodes and containers.
            stats_tier = step % HOUR == 0
            assert result.tier is (Tier.STATISTICS if stats_tier else Tier.RAW)
            for ident, points in expected.items():
                got = found[ident]
                assert [b for b, _ in got] == [b for b, _ in points], (ident, agg)
                if agg is Agg.STDDEV:
                    # Exact at every tier (sums of squares are stored), up to float rounding.
                    assert result.relative_error == 0.0
                    assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-9), (
                        database,
                        kind,
                        resource,
                        ident,
                    )
                elif agg.quantile is not None and stats_tier:
                    assert result.relative_error == RELATIVE_ACCURACY
                    for (_, value), (_, exact) in zip(got, points, strict=True):
                        assert abs(value - exact) <= RELATIVE_ACCURACY * exact + 1e-9, (ident, agg)
                else:
                    assert got == points, (database, kind, resource, agg, ident)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_raw_points_and_pod_sums(dbs: dict[str, Store], database: str) -> None:
    for kind in SERIES_KINDS:
        for resource in Resource:
            _, found = run(dbs[database], kind, resource, T0 + 50 * 60_000, END, None, Agg.AVG)
            expected = reference_series(kind, resource, T0 + 50 * 60_000, END)
            assert found == {k: sorted(v.items()) for k, v in expected.items()}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "selector",
    ["tier=front", "tier in (back)", "app!=web", "canary", "!canary", "tier notin (front,x)"],
)
def test_selectors(dbs: dict[str, Store], database: str, selector: str) -> None:
    _, found = run(
        dbs[database], QueryKind.CONTAINER, Resource.CPU, T0, END, HOUR, Agg.MAX, selector
    )
    assert found == reference(QueryKind.CONTAINER, Resource.CPU, T0, END, HOUR, Agg.MAX, selector)
    assert found  # every selector above matches something


def test_both_databases_answer_identically(dbs: dict[str, Store]) -> None:
    for kind in SERIES_KINDS:
        for agg in Agg:
            a = run(dbs["sqlite"], kind, Resource.MEMORY, T0 + 1, END - 1, HOUR, agg)[1]
            b = run(dbs["postgresql"], kind, Resource.MEMORY, T0 + 1, END - 1, HOUR, agg)[1]
            assert a == b


def test_summary_by_namespace_and_label(dbs: dict[str, Store]) -> None:
    for store in dbs.values():
        for group_by, group_of in (
            ("namespace", lambda s: s.key.namespace),
            ("label:tier", lambda s: PODS[(s.key.namespace, s.key.pod)][1]["tier"]),
            ("pod", lambda s: f"{s.key.namespace}/{s.key.pod}"),
        ):
            groups = engine.summarize(
                store, SeriesFilter(QueryKind.CONTAINER), group_by, T0, END, max_groups=100
            )
            mine = [s for s in SAMPLES if s.key.kind is Kind.CONTAINER]
            assert [g.group for g in groups] == sorted({group_of(s) for s in mine})
            for group in groups:
                members = [s for s in mine if group_of(s) == group.group]
                series = {s.key for s in members}
                assert group.series == len(series)
                cpu = [s.cpu_nanocores for s in members]
                assert group.cpu is not None and group.cpu.samples == len(members)
                assert group.cpu.max == max(cpu)
                exact = exact_quantile(cpu, 0.95)
                assert abs(group.cpu.p95 - exact) <= RELATIVE_ACCURACY * exact
                # Integral: each sample holds for the resolution (15 s).
                assert group.cpu.integral == pytest.approx(sum(cpu) * 15, rel=1e-12)
                # Each series covers 15 s per sample; they all span the window, ~4% of polls
                # missed: the group covers ~96% of it, and avg is the integral over that time.
                window = (END - T0) / 1000
                assert 0.9 < group.cpu.coverage < 1.0
                assert group.cpu.avg * group.cpu.coverage == pytest.approx(
                    sum(cpu) * 15 / window, rel=1e-12
                )  # avgOverWindow
                means = [
                    statistics.mean(s.cpu_nanocores for s in members if s.key == k) for k in series
                ]
                if len(series) == 1:
                    # One series: its covered time is 15 s per sample, avg its samples' mean.
                    assert group.cpu.coverage == pytest.approx(len(members) * 15 / window)
                    assert group.cpu.avg == pytest.approx(means[0], rel=1e-12)
                else:
                    # Series side by side: the group's total, about the sum of their means.
                    assert group.cpu.avg == pytest.approx(sum(means), rel=0.03)


@pytest.fixture(scope="module")
def api(dbs: dict[str, Store]) -> Iterator[httpx.Client]:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(dbs["postgresql"], registry, clock=lambda: END / 1000)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_http_json_and_csv_agree_with_the_reference(api: httpx.Client) -> None:
    params = {
        "resource": "cpu",
        "kind": "pod",
        "start": (T0 + 1000) / 1000,
        "end": END / 1000,
        "step": "30m",
        "agg": "p95",
    }
    body = api.get("/api/v1/history", params=params).json()
    assert body["data"]["tier"] == "raw" and body["data"]["step"] == 1800
    expected = reference(QueryKind.POD, Resource.CPU, T0 + 1000, END, 30 * 60_000, Agg.P95)
    assert all(list(s["labels"]) == ["cluster", "namespace", "pod"] for s in body["data"]["series"])
    got = {tuple(s["labels"].values()): s["points"] for s in body["data"]["series"]}
    assert got == {
        k: [[b / 1000, float(v) / 1e9] for b, v in points] for k, points in expected.items()
    }
    rows = list(
        csv.reader(io.StringIO(api.get("/api/v1/history", params={**params, "format": "csv"}).text))
    )
    assert rows[0] == ["cluster", "namespace", "pod", "timestamp", "cpu_cores"]
    assert len(rows) - 1 == sum(len(p) for p in expected.values())
    for cluster, namespace, pod, ts, value in rows[1:]:
        bucket = int(datetime.fromisoformat(ts).timestamp() * 1000)  # RFC 3339
        exact = dict(expected[(cluster, namespace, pod)])[bucket]
        assert float(value) == float(exact) / 1e9

    avg = api.get(
        "/api/v1/history", params={**params, "agg": "avg", "kind": "node", "step": "1h"}
    ).json()
    assert avg["data"]["tier"] == "chunk_statistics"
    reference_avg = reference(QueryKind.NODE, Resource.CPU, T0 + 1000, END, HOUR, Agg.AVG)
    for series in avg["data"]["series"]:
        want = reference_avg[tuple(series["labels"].values())]
        assert series["points"] == [[b / 1000, float(v / 10**9)] for b, v in want]


def test_http_series_and_summary(api: httpx.Client) -> None:
    pods = api.get("/api/v1/series", params={"kind": "pod", "selector": "tier=front"}).json()[
        "data"
    ]
    assert sorted(p["labels"]["pod"] for p in pods) == ["cart", "web"]
    web = next(p for p in pods if p["labels"]["pod"] == "web")
    assert web["podLabels"] == {"app": "web", "tier": "front"}
    web_samples = [s.timestamp_ms for s in SAMPLES if s.key.pod == "web"]
    assert web["firstSeen"] == min(web_samples) / 1000
    assert web["lastSeen"] == max(web_samples) / 1000
    summary = api.get(
        "/api/v1/summary", params={"group_by": "namespace", "start": T0 / 1000, "end": END / 1000}
    ).json()["data"]
    shop = next(g for g in summary["groups"] if g["group"] == "shop")
    shop_memory = [s.memory_bytes for s in SAMPLES if s.key.namespace == "shop"]
    assert shop["memory"]["max"] == max(shop_memory)
    assert shop["memory"]["gibHours"] == pytest.approx(sum(shop_memory) * 15 / 2**30 / 3600)
    assert shop["cpu"]["coreHours"] == pytest.approx(
        sum(s.cpu_nanocores for s in SAMPLES if s.key.namespace == "shop") * 15 / 1e9 / 3600
    )
    bad = api.get("/api/v1/summary", params={"group_by": "colour"})
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"


def test_cli_top_pods_prints_kubectl_style_values(
    dbs: dict[str, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    from math import ceil

    from recorder.cli import main

    url = dbs["sqlite"].engine.url.render_as_string(hide_password=False)
    start = END - HOUR
    args = ["top", "pods", "-A", "--since", "1h", "--end", str(END / 1000), "--agg", "max"]
    assert main([*args, "--database-url", url, "--sort-by", "memory"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    # A pod's max is the max of its summed series (its containers added at each instant), not
    # the sum of each container's max.
    cpu_of = reference_series(QueryKind.POD, Resource.CPU, start, END)
    memory_of = reference_series(QueryKind.POD, Resource.MEMORY, start, END)
    expected = {}
    for (cluster, namespace, pod), points in cpu_of.items():
        assert cluster == DEFAULT_CLUSTER
        cpu, memory = max(points.values()), max(memory_of[(cluster, namespace, pod)].values())
        expected[(namespace, pod)] = (f"{ceil(cpu / 10**6)}m", f"{memory // 2**20}Mi", memory)
    assert expected.keys() == set(PODS)
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        [ns, pod, cpu, mem]
        for (ns, pod), (cpu, mem, _) in sorted(expected.items(), key=lambda kv: -kv[1][2])
    ]
    assert main([*args[:2], "--namespace", "data", *args[3:], "--database-url", url]) == 0
    only = capsys.readouterr().out.splitlines()
    assert only[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [line.split()[0] for line in only[1:]] == ["db"]


def test_cli_query_formats(dbs: dict[str, Store], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from recorder.cli import main

    url = dbs["postgresql"].engine.url.render_as_string(hide_password=False)
    common = [
        "query",
        "--database-url",
        url,
        "--resource",
        "memory",
        "--kind",
        "node",
        "--node",
        "n1",
        "--start",
        str(T0 / 1000),
        "--end",
        str(END / 1000),
        "--step",
        "1h",
        "--agg",
        "max",
    ]
    assert main([*common, "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    expected = reference(QueryKind.NODE, Resource.MEMORY, T0, END, HOUR, Agg.MAX)[
        (DEFAULT_CLUSTER, "n1")
    ]
    assert body["data"]["series"][0]["points"] == [[b / 1000, v] for b, v in expected]
    assert main([*common, "--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["CLUSTER", "NODE", "TIME", "MEMORY"]
    assert table[1].split() == [
        DEFAULT_CLUSTER,
        "n1",
        "2024-05-01T00:00:00Z",
        f"{expected[0][1] // 2**20}Mi",
    ]
    assert main([*common, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "cluster,node,timestamp,memory_bytes",
        f"{DEFAULT_CLUSTER},n1,2024-05-01T00:00:00Z,{expected[0][1]}",
    ]
    assert main([*common, "--format", "csv", "--time-format", "unix"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[1]
        == f"{DEFAULT_CLUSTER},n1,{T0 / 1000},{expected[0][1]}"
    )

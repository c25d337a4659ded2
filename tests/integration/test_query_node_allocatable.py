"""Node usage beside its allocatable over time (``with_allocatable``, both databases): a
simulated cluster recorded through the real poll path and object reader (``tests.
recommend_support``); each node point carries the allocatable the simulator's node object
showed (none before the node was first read), in the query layer, the HTTP API (JSON, CSV) and
``recorder query``'s table, whose percentage is kubectl top node's."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import update

from recorder.api.app import AppDeps, create_app
from recorder.cli import main
from recorder.domain import HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.errors import QueryError
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query import engine
from recorder.query.formats import kubectl_percent
from recorder.store import Store, schema
from recorder.units import cpu_nanocores, memory_bytes
from tests.recommend_support import T0, Recorded, recorded_cluster
from tests.servers import serving

STEPS = 12
LATE_MS = 300_000


@dataclass
class Nodes:
    store: Store
    recorded: Recorded
    allocatable: dict[str, dict[Resource, int]]
    """What the simulator's node objects say, by node name."""
    first_read_ms: int


@pytest.fixture
def nodes(store: Store) -> Iterator[Nodes]:
    with recorded_cluster(store, steps=STEPS) as recorded:
        items = httpx.get(f"{recorded.url}/api/v1/nodes", timeout=10).json()["items"]
        allocatable = {
            n["metadata"]["name"]: {
                Resource.CPU: int(cpu_nanocores(n["status"]["allocatable"]["cpu"])),
                Resource.MEMORY: int(memory_bytes(n["status"]["allocatable"]["memory"])),
            }
            for n in items
        }
        # As if the nodes were first read 5 minutes into the recording (RBAC granted late):
        # the points before have no allocatable.
        late = min(recorded.first_seen.values()) + LATE_MS
        nr = schema.node_resources
        with store.engine.begin() as conn:
            conn.execute(update(nr).values(since_ms=nr.c.since_ms + LATE_MS))
        yield Nodes(store, recorded, allocatable, late)


def _query(nodes: Nodes, resource: Resource, step_ms: int | None = None) -> HistoryQuery:
    where = SeriesFilter(QueryKind.NODE)
    return HistoryQuery(resource, where, int(T0 * 1000), nodes.recorded.end_ms, step_ms)


@pytest.mark.parametrize("resource", list(Resource))
@pytest.mark.parametrize("step_ms", [None, 300_000])
def test_each_point_carries_the_allocatable_in_effect(
    nodes: Nodes, resource: Resource, step_ms: int | None
) -> None:
    result = engine.history(
        nodes.store, _query(nodes, resource, step_ms), max_points=10**6, with_allocatable=True
    )
    assert {s.labels["node"] for s in result.series} == set(nodes.allocatable)
    known = 0
    for series in result.series:
        assert series.allocatable is not None and series.request is None
        assert len(series.allocatable) == len(series.points)
        wanted = nodes.allocatable[series.labels["node"]][resource]
        for (ts, _value), allocatable in zip(series.points, series.allocatable, strict=True):
            at = ts if step_ms is None else min(ts + step_ms - 1, nodes.recorded.end_ms)
            assert allocatable == (wanted if at >= nodes.first_read_ms else None), (ts, at)
            known += allocatable is not None
    assert known > len(result.series)  # most points have it, not all
    assert known < sum(len(s.points) for s in result.series)


def test_allocatable_belongs_to_nodes(nodes: Nodes) -> None:
    pods = HistoryQuery(Resource.CPU, SeriesFilter(QueryKind.POD), 0, nodes.recorded.end_ms)
    with pytest.raises(QueryError, match="kind=node"):
        engine.history(nodes.store, pods, max_points=100, with_allocatable=True)
    plain = engine.history(nodes.store, _query(nodes, Resource.CPU), max_points=10**6)
    assert all(s.allocatable is None for s in plain.series)


def test_the_api_and_the_cli_show_it_and_kubectl_s_percentage(
    nodes: Nodes, capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(nodes.store, registry, clock=lambda: nodes.recorded.end_ms / 1000)
    start, end = int(T0), nodes.recorded.end_ms // 1000
    base = {"resource": "cpu", "kind": "node", "start": str(start), "end": str(end)}
    with serving(create_app(deps)) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.get("/api/v1/history", params={**base, "with_allocatable": "true"})
        assert answer.status_code == 200, answer.text
        for series in answer.json()["data"]["series"]:
            wanted = nodes.allocatable[series["labels"]["node"]][Resource.CPU] / 1e9
            assert [v for _t, v in series["allocatable"] if v is not None] == [wanted] * sum(
                1 for t, _v in series["points"] if t * 1000 >= nodes.first_read_ms
            )
        table = http.get(
            "/api/v1/history", params={**base, "with_allocatable": "true", "format": "csv"}
        )
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert rows and all("cpu_allocatable_cores" in row for row in rows)
        refused = http.get(
            "/api/v1/history", params={**base, "kind": "pod", "with_allocatable": "true"}
        )
        assert refused.status_code == 400 and "kind=node" in refused.text
    code = main(
        [
            "query",
            "--resource",
            "cpu",
            "--database-url",
            database_url,
            "--kind",
            "node",
            "--start",
            str(start),
            "--end",
            str(end),
            "--with-allocatable",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].split()[-2:] == ["ALLOCATABLE", "CPU%"]
    raw = engine.history(
        nodes.store, _query(nodes, Resource.CPU), max_points=10**6, with_allocatable=True
    )
    shown = [line.split()[-1] for line in lines[1:]]
    wanted = [
        kubectl_percent(Resource.CPU, value, allocatable)
        for series in raw.series
        for (_ts, value), allocatable in zip(series.points, series.allocatable or [], strict=True)
    ]
    assert sorted(shown) == sorted(wanted) and any(p.endswith("%") for p in shown)

"""Recommendations for a simulated cluster recorded through the real poll path and cluster-object
reader (``tests.recommend_support``), on SQLite and PostgreSQL, equal the strategy's definition
computed here from the raw samples the simulator served: exact counts, maxima, memory
proposals, replicas and savings; percentiles within the sketch's stated error. The cluster
churns and rolls out (a Deployment's pods are all replaced during the window, through new
ReplicaSets, some with a new CPU request), has an HPA, OOM-killed and
throttled containers, and containers with fewer than 100 points."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy

from recorder.api.app import AppDeps, create_app
from recorder.cli import build_parser
from recorder.cli.service import demo_simulator
from recorder.domain import Resource
from recorder.exporter import SnapshotHolder, build_registry
from recorder.query import engine, recommend_output
from recorder.query.recommend import (
    Recommendation,
    Report,
    Strategy,
    cpu_request_for,
    recommend,
)
from recorder.query.scan import Scan
from recorder.query.workloads import WorkloadFilter
from recorder.simulator import SimulatorConfig
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store import Store, open_store
from tests.conftest import POSTGRES_ADMIN_URL
from tests.recommend_support import (
    SIMULATED,
    STEPS,
    Expected,
    Recorded,
    recorded_cluster,
    reference,
)
from tests.servers import serving

HOURS = 730


class Cluster:
    def __init__(self, store: Store, recorded: Recorded) -> None:
        self.store = store
        self.recorded = recorded
        self.report = recommend(store, WorkloadFilter(), Strategy(), recorded.end_ms)
        self.expected = reference(recorded, start_ms=self.report.start_ms)


def demo_cluster() -> tuple[SimulatorConfig, int]:
    """``recorder demo``'s simulated cluster, from its own flags' defaults, and the polls of the
    README's worked example (26 minutes at its 15 s resolution)."""
    config = demo_simulator(build_parser().parse_args(["demo"]))
    return config, math.ceil(26 * 60 / config.resolution_seconds)


SCENARIOS = {"churned": lambda: (SIMULATED, STEPS), "demo": demo_cluster}


@pytest.fixture(
    scope="module",
    params=[(db, scenario) for scenario in SCENARIOS for db in ("sqlite", "postgresql")],
    ids=lambda p: "-".join(p),
)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One recording per database and scenario for the whole module (it takes seconds)."""
    admin = None
    name = f"recorder_test_{uuid.uuid4().hex[:12]}"
    db, scenario = request.param
    config, steps = SCENARIOS[scenario]()
    if db == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('recommend') / 'recorder.db'}"
    else:
        admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made = sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name)
        url = made.render_as_string(hide_password=False)
    store = open_store(url)
    try:
        store.migrate()
        with recorded_cluster(store, config=config, steps=steps) as recorded:
            yield Cluster(store, recorded)
    finally:
        store.close()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()


def _key(r: Recommendation) -> tuple[str, str, str, str]:
    return (r.namespace, r.kind, r.name, r.container)


def test_every_workload_container_is_listed_with_the_references_numbers(cluster: Cluster) -> None:
    report = cluster.report
    workload = cluster.recorded.workload
    assert {_key(r) for r in report.recommendations} == set(cluster.expected)
    for r in report.recommendations:
        e = cluster.expected[_key(r)]
        where = _key(r)
        assert r.usage.points == e.points, where
        assert r.usage.pods == len(e.pods), where
        assert r.usage.cpu_max_nanocores == e.cpu_max, where
        assert r.usage.memory_max_bytes == e.memory_max, where
        assert math.isclose(r.usage.replicas, e.replicas, rel_tol=1e-12), where
        # Never more replicas than the workload had pods at once.
        at_once = max(
            sum(1 for p in listed if p[0] == r.namespace and workload[p] == (r.kind, r.name))
            for listed in cluster.recorded.pods_at.values()
        )
        assert r.usage.replicas <= at_once, where
        # The percentile comes from sketches: within their relative accuracy of the exact one.
        assert abs(r.usage.cpu_quantile_nanocores - e.cpu_quantile) <= (
            RELATIVE_ACCURACY * e.cpu_quantile + 1e-6
        ), where
        assert 0 < r.usage.coverage <= 1
        cpu_request, cpu_limit, memory_request, memory_limit = e.current
        assert (r.cpu.current_request, r.cpu.current_limit) == (cpu_request, cpu_limit), where
        assert (r.memory.current_request, r.memory.current_limit) == (
            memory_request,
            memory_limit,
        ), where
        assert r.oom_killed == e.oom_killed, where
        assert r.throttled == (cpu_limit is not None and e.cpu_max >= 0.9 * cpu_limit), where
        _check_proposals(r, e)


def _check_proposals(r: Recommendation, e: Expected) -> None:
    where = _key(r)
    if e.points < 100:
        for p in (r.cpu, r.memory):
            assert p.request is None and p.limit is None, where
            assert p.reason is not None and p.reason.startswith("too little history"), where
            assert f"{e.points} data points of the 100 needed" in p.reason
        return
    for resource, p in ((Resource.CPU, r.cpu), (Resource.MEMORY, r.memory)):
        if resource.value in e.hpa:
            assert p.request is None and p.limit is None, where
            assert p.reason is not None, where
            assert f"HorizontalPodAutoscaler {e.hpa[resource.value]} scales" in p.reason
            assert p.saving_per_month(r.usage.replicas) is None
    if "cpu" not in e.hpa:
        assert r.cpu.request is not None and r.cpu.limit is None, where
        assert r.cpu.request == cpu_request_for(r.usage.cpu_quantile_nanocores)
        low = cpu_request_for(e.cpu_quantile * (1 - RELATIVE_ACCURACY))
        high = cpu_request_for(e.cpu_quantile * (1 + RELATIVE_ACCURACY))
        assert low <= r.cpu.request <= high, where
        saving = (e.current[0] or 0) - r.cpu.request
        assert math.isclose(
            r.cpu.saving_per_month(r.usage.replicas) or 0.0,
            saving * e.replicas * HOURS / 1e9,
            rel_tol=1e-9,
            abs_tol=1e-9,
        ), where
    if "memory" not in e.hpa:
        # Exact: the peak is exact, and so is the 15 % buffer rounded up to a MiB.
        assert r.memory.request == r.memory.limit == e.memory_proposal, where
        saving = (e.current[2] or 0) - e.memory_proposal
        assert math.isclose(
            r.memory.saving_per_month(r.usage.replicas) or 0.0,
            saving * e.replicas * HOURS / 2**30,
            rel_tol=1e-9,
            abs_tol=1e-9,
        ), where


def test_slices_of_series_recommend_as_all_at_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The series' statistics are gathered a slice at a time (``engine.sliced_statistics``):
    slices of 3 series give the report one slice gives (the module's report, 4,096 a slice)."""
    monkeypatch.setattr(engine, "SUMMARY_SLICE_UNITS", 3)
    seen: list[int] = []
    real = Scan.statistics

    def statistics(self: Scan, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(self.units))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Scan, "statistics", statistics)
    sliced = recommend(cluster.store, WorkloadFilter(), Strategy(), cluster.recorded.end_ms)
    assert sliced == cluster.report and len(sliced.recommendations) > 3
    assert len(seen) > 1 and max(seen) <= 3  # never every series' samples at once


def _only(scenario: str) -> pytest.MarkDecorator:
    """Run a test on one scenario's recordings (both databases)."""
    params = [(db, scenario) for db in ("sqlite", "postgresql")]
    return pytest.mark.parametrize("cluster", params, indirect=True, ids=lambda p: "-".join(p))


@_only("churned")
def test_the_scenario_holds_what_the_issue_asks_for(cluster: Cluster) -> None:
    """The churned Deployment, the HPA, the short history, OOMKilled and throttled are all in
    this recording (else the test above would prove less than it says)."""
    recorded, report = cluster.recorded, cluster.report
    by_key = {_key(r): r for r in report.recommendations}
    first, last = recorded.pods_at[0], recorded.pods_at[max(recorded.pods_at)]
    replaced = [
        r
        for r in report.recommendations
        if r.kind == "Deployment"
        and r.cpu.proposed
        and r.memory.proposed
        and (started := {p for p in first if recorded.workload[p] == (r.kind, r.name)})
        and started.isdisjoint(last)
        and r.namespace == next(iter(started))[0]
    ]
    assert replaced, "a Deployment whose pods were all replaced, with proposals"
    # Rollouts: Deployments whose pods came from several ReplicaSets, and one whose CPU request
    # a rollout changed (the reference's current requests are the newest pod's).
    templates = {
        _key(r): {pod.rsplit("-", 1)[0] for pod in cluster.expected[_key(r)].pods}
        for r in report.recommendations
        if r.kind == "Deployment"
    }
    assert sum(len(t) >= 3 for t in templates.values()) >= 3, templates
    assert any(
        len({recorded.resources[(key[0], pod, key[3])] for pod in cluster.expected[key].pods}) > 1
        for key in templates
    )
    assert any(r.cpu.reason and "HorizontalPodAutoscaler" in r.cpu.reason for r in by_key.values())
    assert any(r.usage.points < 100 for r in by_key.values())
    assert any(r.oom_killed for r in by_key.values())
    assert any(r.throttled for r in by_key.values())
    assert all(any("throttled" in n for n in r.notes) == r.throttled for r in by_key.values())
    # The first hour was compacted: its statistics (sketches) answered it.
    with cluster.store.reading() as conn:
        chunks = conn.exec_driver_sql("SELECT COUNT(*) FROM chunks").scalar_one()
    assert chunks > 0


@_only("demo")
def test_the_demo_rolls_out_and_replaces_a_deployment_s_every_pod(cluster: Cluster) -> None:
    """The README's worked example: on the demo's cluster, 26 minutes in, a Deployment whose
    first pods are all gone has proposals (the test above checks every number), and every
    Deployment's pods came from more than one ReplicaSet."""
    recorded, report = cluster.recorded, cluster.report
    first, last = recorded.pods_at[0], recorded.pods_at[max(recorded.pods_at)]
    deployments = [r for r in report.recommendations if r.kind == "Deployment"]
    assert deployments
    for r in deployments:
        pods = cluster.expected[_key(r)].pods
        assert len({pod.rsplit("-", 1)[0] for pod in pods}) >= 2, (r.name, pods)
    replaced = [
        r
        for r in deployments
        if r.cpu.request is not None
        and r.memory.request is not None
        and (started := {p for p in first if recorded.workload[p] == (r.kind, r.name)})
        and started.isdisjoint(last)
    ]
    assert replaced


@_only("churned")
def test_parameters_change_the_strategy(cluster: Cluster) -> None:
    end = cluster.recorded.end_ms
    loose = recommend(
        cluster.store,
        WorkloadFilter(namespaces=("shop",)),
        Strategy(min_points=10, cpu_percentile=50, memory_buffer_percent=0, allow_hpa=True),
        end,
    )
    assert loose.recommendations and all(r.namespace == "shop" for r in loose.recommendations)
    for r in loose.recommendations:
        assert r.cpu.proposed and r.memory.proposed
        assert r.memory.request == -(-r.usage.memory_max_bytes // 2**20) * 2**20
        default = next(d for d in cluster.report.recommendations if _key(d) == _key(r))
        assert r.usage.cpu_quantile_nanocores <= default.usage.cpu_quantile_nanocores
    # A window that ends before the recording has nothing.
    assert not recommend(cluster.store, WorkloadFilter(), Strategy(), end - 10**8).recommendations
    one = recommend(
        cluster.store, WorkloadFilter(kind="deployment", name="frontend"), Strategy(), end
    )
    assert {r.name for r in one.recommendations} == {"frontend"}


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(cluster.store, registry, clock=lambda: cluster.recorded.end_ms / 1000)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def test_the_api_answers_as_the_query_layer(cluster: Cluster, client: httpx.Client) -> None:
    response = client.get("/api/v1/recommendations")
    assert response.status_code == 200, response.text
    assert response.json() == _json(cluster.report)
    shop = client.get("/api/v1/recommendations", params={"namespace": "shop", "format": "csv"})
    assert shop.status_code == 200 and shop.headers["content-type"].startswith("text/csv")
    assert shop.text == recommend_output.recommendations_csv(
        recommend(
            cluster.store,
            WorkloadFilter(namespaces=("shop",)),
            Strategy(),
            cluster.recorded.end_ms,
        )
    )
    patched = client.get("/api/v1/recommendations", params={"format": "yaml-patch"})
    assert patched.text == recommend_output.patches_yaml(recommend_output.patches(cluster.report))
    tuned = client.get(
        "/api/v1/recommendations",
        params={"min_points": 10, "cpu_percentile": 99, "memory_buffer": 30, "allow_hpa": "true"},
    ).json()["data"]
    assert tuned["strategy"]["minPoints"] == 10 and tuned["strategy"]["allowHpa"] is True
    assert all(r["cpu"]["proposed"] is not None for r in tuned["recommendations"])


def _json(report: Report) -> object:
    return json.loads(json.dumps(recommend_output.recommendations_json(report)))


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"cpu_percentile": "0"}, "cpu_percentile"),
        ({"cpu_percentile": "101"}, "cpu_percentile"),
        ({"memory_buffer": "-1"}, "memory_buffer"),
        ({"min_points": "0"}, "min_points"),
        ({"throttle_ratio": "2"}, "throttle_ratio"),
        ({"window": "soon"}, "window"),
        ({"window": "30m"}, "at least 1h"),
        ({"window": "9999d"}, "window"),
        ({"end": "yesterday-ish"}, "end"),
        ({"format": "xml"}, "format"),
        ({"selector": "a in (b"}, "selector"),
    ],
)
def test_bad_parameters_are_400s_that_name_them(
    client: httpx.Client, query: dict[str, str], names: str
) -> None:
    response = client.get("/api/v1/recommendations", params=query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert names in body["error"], body["error"]
    assert "Traceback" not in response.text


def test_throttling_and_oom_say_the_usage_under_states_the_need(cluster: Cluster) -> None:
    for r in cluster.report.recommendations:
        text = " ".join(r.notes)
        if r.throttled:
            assert "under-states the need" in text and "CPU request may be too low" in text
        if r.oom_killed:
            assert "OOM-killed" in text and "memory may be too low" in text

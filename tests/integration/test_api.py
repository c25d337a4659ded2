"""The HTTP API in-process over a real store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.errors import StoreError
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store
from tests.servers import serving

NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z
T0 = int(NOW * 1000) - 60_000


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store (tests/conftest.py: SQLite and PostgreSQL) with two containers' and a
    node's samples of a minute ago."""
    store.write(
        Batch(
            Kind.CONTAINER,
            (
                Sample(
                    SeriesKey.for_container("shop", "web", "app"), T0, 30_000, 487_558_164, 2**30
                ),
                Sample(SeriesKey.for_container("shop", "web", "app"), T0 + 15_000, 30_000, 1, 2),
                Sample(SeriesKey.for_container("kube-system", "dns", "coredns"), T0, 30_000, 0, 7),
            ),
        ),
        now_ms=T0,
    )
    store.write(
        Batch(Kind.NODE, (Sample(SeriesKey.for_node("n1"), T0, 30_000, 2_250_000_000, 9),)),
        now_ms=T0,
    )
    return store


@pytest.fixture
def client(store: Store) -> Iterator[httpx.Client]:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(
        store,
        registry,
        poller_status=lambda: {"poll": "ok"},
        clock=lambda: NOW,
        max_points=100,
        max_range_ms=400 * 86_400_000,
    )
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_history_json_in_cores_and_bytes(client: httpx.Client) -> None:
    response = client.get("/api/v1/history", params={"resource": "cpu", "namespace": "shop"})
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "data": {
            "resource": "cpu",
            "unit": "cores",
            "kind": "container",
            "tier": "raw",
            "series": [
                {
                    "labels": {
                        "cluster": DEFAULT_CLUSTER,
                        "namespace": "shop",
                        "pod": "web",
                        "container": "app",
                    },
                    "points": [[T0 / 1000, 0.487558164], [T0 / 1000 + 15, 1e-9]],
                }
            ],
        },
    }
    nodes = client.get("/api/v1/history?resource=memory&kind=node").json()["data"]
    assert nodes["unit"] == "bytes"
    assert nodes["series"] == [
        {"labels": {"cluster": DEFAULT_CLUSTER, "node": "n1"}, "points": [[T0 / 1000, 9]]}
    ]


def test_history_time_range_rfc3339_and_unix(client: httpx.Client) -> None:
    start = "2024-05-01T09:59:10Z"  # after T0 (09:59:00), before T0 + 15 s
    found = client.get(
        "/api/v1/history", params={"resource": "memory", "pod": "web", "start": start}
    ).json()["data"]["series"]
    assert found[0]["points"] == [[T0 / 1000 + 15, 2]]
    found = client.get(
        "/api/v1/history",
        params={"resource": "memory", "pod": "web", "start": T0 / 1000, "end": T0 / 1000},
    ).json()["data"]["series"]
    assert found[0]["points"] == [[T0 / 1000, 2**30]]


def test_history_csv(client: httpx.Client) -> None:
    response = client.get("/api/v1/history?resource=cpu&kind=node&format=csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["cluster", "node", "timestamp", "cpu_cores"],
        [DEFAULT_CLUSTER, "n1", str(T0 / 1000), "2.25"],
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "resource"),
        ("resource=disk", "resource"),
        ("resource=cpu&kind=pod-ish", "kind"),
        ("resource=cpu&start=yesterday", "start"),
        ("resource=cpu&start=-5x", "start"),
        ("resource=cpu&step=0s", "step"),
        ("resource=cpu&step=500ms", "shorter than 1s"),
        ("resource=cpu&step=1s&start=0&end=86400", "more than 11000"),
        ("resource=cpu&agg=p42&step=1m", "agg"),
        ("resource=cpu&selector=app%20in%20(a", "selector"),
        ("resource=cpu&kind=node&selector=app%3Dweb", "selector matches pod labels"),
        ("resource=cpu&kind=pod&container=app", "kind=pod sums a pod's containers"),
        ("resource=cpu&kind=pod&node=n1", "filter by namespace, pod or selector"),
        ("resource=cpu&start=0&end=99999999", "maximum"),
        ("resource=cpu&start=2024-05-01T10:00:00", "time zone"),
        ("resource=cpu&start=10&end=5", "start must not be after end"),
        ("resource=cpu&end=1e300", "out of range"),
        ("resource=cpu&end=nan", "out of range"),
        ("resource=cpu&format=xml", "format"),
        ("resource=cpu&pod=" + "x" * 300, "pod"),
    ],
)
def test_bad_parameters_get_the_error_envelope(
    client: httpx.Client, query: str, message: str
) -> None:
    response = client.get(f"/api/v1/history?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert message in body["error"]


def test_too_many_points_is_a_400_not_an_unbounded_response(store: Store) -> None:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: NOW, max_points=1)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/api/v1/history?resource=cpu")
    assert response.status_code == 400
    assert "the query matches more than 1 points" in response.json()["error"]


def test_health_endpoints(client: httpx.Client) -> None:
    assert client.get("/livez").text == "ok\n"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "poll": "ok"}


def test_a_failing_poller_shows_in_readyz_without_failing_it(store: Store) -> None:
    """Readiness means "can serve reads": a replica whose polls or writes fail keeps serving
    history, and says why in the details."""
    registry, _ = build_registry(SnapshotHolder())
    status = {"poll": "no successful poll for 95s: metrics-server unavailable", "write": "ok"}
    deps = AppDeps(store, registry, poller_status=lambda: status, clock=lambda: NOW)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "schema": "ok", **status},
    }


def test_a_broken_poller_status_still_answers_readyz(store: Store) -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("poller gone")

    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, poller_status=broken, clock=lambda: NOW)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["poller"] == "status unavailable: RuntimeError: poller gone"


class _Failing:
    """A store whose database is down, or at an older schema."""

    def __init__(self, store: Store, *, down: bool = False, outdated: bool = False) -> None:
        self._store, self._down, self._outdated = store, down, outdated

    def ping(self) -> None:
        if self._down:
            raise StoreError("database sqlite:///x is unreachable: disk I/O error")

    def schema_is_current(self) -> bool:
        return not self._outdated

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize(
    ("failing", "checks"),
    [
        (
            {"down": True},
            {"database": "failed: database sqlite:///x is unreachable: disk I/O error"},
        ),
        ({"outdated": True}, {"database": "ok", "schema": "outdated: run recorder migrate"}),
    ],
)
def test_not_ready_when_the_database_cannot_serve_reads(
    store: Store, failing: dict[str, bool], checks: dict[str, str]
) -> None:
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(_Failing(store, **failing), registry, poller_status=lambda: {"poll": "ok"})
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "fail", "checks": {**checks, "poll": "ok"}}


def test_a_bug_is_a_logged_500_with_the_envelope_and_no_log_storm(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(_Failing):
        """Every history query reads through ``reading()``: the bug strikes there."""

        def reading(self) -> None:
            raise ZeroDivisionError("a bug")

    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(Buggy(store), registry, clock=lambda: NOW)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        responses = [client.get("/api/v1/history?resource=cpu") for _ in range(20)]
        assert client.get("/livez").status_code == 200
    for response in responses:
        assert response.status_code == 500
        assert response.json()["errorType"] == "internal"
        assert "a bug, logged" in response.json()["error"]
    logged = [r for r in caplog.records if r.name == "recorder.api.app"]
    assert len(logged) == 5  # of 20: a few a minute
    assert "ZeroDivisionError" in logged[0].getMessage() and logged[0].exc_info


def test_unknown_paths_get_the_error_envelope(client: httpx.Client) -> None:
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"status": "error", "errorType": "not_found", "error": "Not Found"}


def test_metrics_negotiates_openmetrics(client: httpx.Client) -> None:
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "recorder_build_info" in plain.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")

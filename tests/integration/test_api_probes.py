"""``/livez``, ``/readyz`` and ``/metrics`` (``recorder.api.probes``) through HTTP over a real
store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store
from tests.api_support import NOW, FailingStore
from tests.servers import serving


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
    deps = AppDeps(FailingStore(store, **failing), registry, poller_status=lambda: {"poll": "ok"})
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "fail", "checks": {**checks, "poll": "ok"}}


def test_metrics_negotiates_openmetrics(client: httpx.Client) -> None:
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "recorder_build_info" in plain.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")

"""``/livez``, ``/readyz`` and ``/metrics`` (``recorder.api.probes``) through HTTP over a real
store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store, open_store
from tests.api_support import NOW, FailingStore
from tests.processes import free_port
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
        ({"down": True}, {"database": "failed: StoreError (details in the log)"}),
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


def test_anonymous_clients_never_learn_who_or_where_the_database_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/readyz and the 503 of a read say the failure's class; the log has the detail, with the
    password (here a query parameter, which libpq accepts) redacted, once per change."""
    port = free_port()  # nothing listens there: a real connection refused
    secrets = ("dbuser-xyz", str(port), "dbname-xyz", "s3cret-xyz")
    url = f"postgresql+psycopg://dbuser-xyz@127.0.0.1:{port}/dbname-xyz?password=s3cret-xyz"
    store = open_store(url, connect_timeout_seconds=2)
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, poller_status=lambda: {}, readiness_cache_seconds=0.0)
    try:
        with (
            caplog.at_level(logging.INFO, logger="recorder"),
            serving(create_app(deps)) as base,
            httpx.Client(base_url=base) as client,
        ):
            ready = [client.get("/readyz") for _ in range(3)]
            read = client.get("/api/v1/history", params={"resource": "cpu"})
    finally:
        store.close()
    assert [r.status_code for r in ready] == [503, 503, 503]
    assert ready[0].json()["checks"] == {"database": "unreachable (details in the log)"}
    assert read.status_code == 503 and read.json()["errorType"] == "unavailable"
    for body in (*(r.text for r in ready), read.text):
        assert not [secret for secret in secrets if secret in body], body
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("recorder.api")]
    readiness = [m for m in logged if m.startswith("readiness:")]
    assert len(readiness) == 1, logged  # the same failure three times: one line
    assert "dbuser-xyz@127.0.0.1" in readiness[0] and "password=***" in readiness[0]
    assert not [m for m in logged if "s3cret-xyz" in m], logged


def test_metrics_negotiates_openmetrics(client: httpx.Client) -> None:
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "recorder_build_info" in plain.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")

"""The error envelope and the catch-all for bugs (``recorder.api.errors``) through HTTP over a
real store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store
from tests.api_support import NOW, FailingStore
from tests.servers import serving


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


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/history", "resource: is required"),
        ("/api/v1/history?resource=disk", "resource: must be one of cpu or memory, got 'disk'"),
        (
            "/api/v1/history?resource=cpu&kind=pod-ish",
            "kind: must be one of node, container, pod or workload, got 'pod-ish'",
        ),
        (
            "/api/v1/history?resource=cpu&pod=" + "x" * 300,
            "pod: must be at most 253 characters long",
        ),
        ("/api/v1/summary?resource=cpu", "group_by: is required"),
    ],
)
def test_invalid_parameters_are_said_in_our_words(
    client: httpx.Client, path: str, message: str
) -> None:
    """The parameter as written, the value sent and what it may be; never the validator's
    own text."""
    response = client.get(path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error
    for raw in ("Input should", "Field required", "validation error", "String should"):
        assert raw not in error


def test_a_bug_is_a_logged_500_with_the_envelope_and_no_log_storm(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(FailingStore):
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

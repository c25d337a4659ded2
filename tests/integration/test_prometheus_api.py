"""The Prometheus API's routes (recorder.api.prometheus_api) over real HTTP and a real store:
Prometheus' envelope, GET and form-encoded POST as Grafana sends them, match[], labels and
values, metadata and buildinfo, error types and status codes, and no 5xx for any input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store, open_store
from tests.api_support import NOW, write_history
from tests.servers import serving

API = "/prometheus/api/v1"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The app over a SQLite store with ``tests.api_support``'s history (two containers and a
    node, a minute before ``NOW``), at ``NOW``, with small bounds."""
    store: Store = open_store(f"sqlite:///{Path(tmp_path_factory.mktemp('prom')) / 'r.db'}")
    store.migrate()
    write_history(store)
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: NOW, max_series=2, max_samples=1000)
    try:
        with serving(create_app(deps)) as url, httpx.Client(base_url=url + API) as client:
            yield client
    finally:
        store.close()


def test_a_query_answers_prometheus_envelope(served: httpx.Client) -> None:
    response = served.get(
        "/query", params={"query": 'recorder_container_cpu_usage_cores{pod="web"}'}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {
                    "metric": {
                        "__name__": "recorder_container_cpu_usage_cores",
                        "cluster": "default",
                        "container": "app",
                        "namespace": "shop",
                        "pod": "web",
                        "workload": "web",
                        "workload_kind": "Pod",
                    },
                    "value": [NOW, "0.000000001"],  # the newest sample: 1 nanocore
                }
            ],
        },
    }


def test_a_range_query_by_form_post_as_grafana_sends_it(served: httpx.Client) -> None:
    response = served.post(
        "/query_range",
        data={
            "query": "sum(recorder_node_memory_working_set_bytes) * 2",
            "start": str(NOW - 120),
            "end": str(NOW),
            "step": "1m",
        },
    )
    assert response.json()["data"] == {
        "resultType": "matrix",
        "result": [{"metric": {}, "values": [[NOW - 60, "18"], [NOW, "18"]]}],
    }


def test_series_labels_and_label_values(served: httpx.Client) -> None:
    found = served.get("/series", params={"match[]": ['{__name__=~".*node.*"}']}).json()
    assert [s["__name__"] for s in found["data"]] == [
        "recorder_node_cpu_usage_cores",
        "recorder_node_memory_working_set_bytes",
    ]
    posted = served.post("/series", data={"match[]": "recorder_node_cpu_usage_cores"}).json()
    assert posted["data"] == [
        {"__name__": "recorder_node_cpu_usage_cores", "cluster": "default", "node": "n1"}
    ]
    names = served.get("/labels").json()["data"]
    assert names == [
        "__name__", "cluster", "container", "namespace", "node", "pod", "workload",
        "workload_kind",
    ]  # fmt: skip
    values = served.get("/label/namespace/values").json()["data"]
    assert values == ["kube-system", "shop"]
    scoped = served.get(
        "/label/pod/values",
        params={"match[]": 'recorder_container_cpu_usage_cores{namespace="shop"}'},
    )
    assert scoped.json()["data"] == ["web"]
    assert (
        served.get("/series", params={"match[]": "x", "start": str(NOW + 3600)}).json()["data"]
        == []
    )


def test_metadata_and_buildinfo(served: httpx.Client) -> None:
    metadata = served.get("/metadata").json()["data"]
    assert metadata["recorder_node_cpu_usage_cores"][0]["type"] == "gauge"
    assert served.get("/status/buildinfo").json()["data"]["version"] == "2.42.0"


@pytest.mark.parametrize(
    ("path", "params", "status", "error_type", "words"),
    [
        ("/query", {"query": "rate(recorder_node_cpu_usage_cores[5m])"}, 400, "bad_data", "rate()"),
        ("/query", {"query": "stddev(recorder_node_cpu_usage_cores)"}, 400, "bad_data", "stddev()"),
        ("/query", {"query": "sum("}, 400, "bad_data", "parse error"),
        ("/query", {"query": "{__name__=~'recorder_node.*'} * 1"}, 422, "execution", "labelset"),
        ("/query", {"query": "{__name__=~'.+'}"}, 400, "bad_data", "more than 2 series"),
        ("/query_range", {"query": "1", "start": "0", "end": "1"}, 400, "bad_data", "step"),
        ("/query_range", {"query": "1", "start": "0", "end": "20000", "step": "1"}, 400,
         "bad_data", "11,000"),
        ("/series", {}, 400, "bad_data", "no match[]"),
        ("/label/bad-name/values", {}, 400, "bad_data", "invalid label name"),
    ],
)  # fmt: skip
def test_errors_have_prometheus_types_and_codes(
    served: httpx.Client,
    path: str,
    params: dict[str, str],
    status: int,
    error_type: str,
    words: str,
) -> None:
    response = served.get(path, params=params)
    body = response.json()
    assert (response.status_code, body["status"], body["errorType"]) == (
        status,
        "error",
        error_type,
    )
    assert words in body["error"]


def test_reading_too_many_samples_is_bad_data(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    write_history(store)
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, clock=lambda: NOW, max_samples=1)
    try:
        with serving(create_app(deps)) as url:
            response = httpx.get(
                url + API + "/query", params={"query": "recorder_container_cpu_usage_cores"}
            )
    finally:
        store.close()
    assert response.status_code == 400
    assert "reads more than 1 samples" in response.json()["error"]


ROUTES = {
    "/query": ("query", "time", "timeout"),
    "/query_range": ("query", "start", "end", "step"),
    "/series": ("match[]", "start", "end"),
    "/labels": ("match[]", "start", "end"),
    "/label/namespace/values": ("match[]", "start", "end"),
    "/metadata": ("metric", "limit"),
}
HOSTILE = st.sampled_from(
    [
        "", " ", "\x00", "%", "{", "}", "[5m]", "NaN", "Inf", "-Inf", "1e309", "-1e309",
        "99999999999999999999999", "-99999999999999999999", "2024-02-30T00:00:00Z",
        "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "1h1h", "0.0000001", "-1",
        "sum(", "1/0", "x" * 5000, "(" * 3000, "-" * 3000 + "x", "m @ -1", "m offset 99999y",
        "m[99999y]", '{a=~"(("}', "label_replace(m, 'a-b', '', 'b', '')", "topk(NaN, m)",
        "quantile(NaN, m)", "é", "\ud7ff", "count_values('x', m)", "m[5m:1m]", "a and b",
        "{__name__=~'.*'}", "1 + 'a'", "scalar(m) + m[5m]",
    ]
)  # fmt: skip
VALUES = st.one_of(
    HOSTILE, st.text(max_size=40), st.from_regex(r"-?\d{1,20}(\.\d{0,5})?", fullmatch=True)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(sorted(ROUTES)),
    values=st.lists(VALUES, min_size=4, max_size=4),
    post=st.booleans(),
)
def test_no_parameter_yields_a_5xx(
    served: httpx.Client, route: str, values: list[str], post: bool
) -> None:
    params = dict(zip(ROUTES[route], values, strict=False))
    if post and route in ("/query", "/query_range", "/series", "/labels"):
        response = served.post(route, data=params)
    else:
        response = served.get(route, params=params)
    assert response.status_code < 500, (route, params, response.text)
    body = response.json()
    if response.status_code >= 400:
        assert body["status"] == "error" and body["errorType"] in ("bad_data", "execution")
        assert isinstance(body["error"], str) and "Traceback" not in body["error"]
    else:
        assert body["status"] == "success"


@pytest.mark.parametrize(
    "body",
    [b"query=%ZZ", b"query=\xff\xfe", b"&&&==", b"query=" + b"1" * 300_000, b"a=1&" * 300],
)
def test_no_form_body_yields_a_5xx(served: httpx.Client, body: bytes) -> None:
    response = served.post(
        "/query", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert 400 <= response.status_code < 500
    # A body past the limit of every route is refused before the route reads it.
    too_large = len(body) > AppDeps.max_request_body_bytes
    assert response.json()["errorType"] == ("too_large" if too_large else "bad_data")
    assert (response.status_code == 413) is too_large


class GatedStore:
    """A store whose reads wait for ``gate``: a query that holds its slot."""

    def __init__(self, store: Store, gate: threading.Event) -> None:
        self._store, self._gate = store, gate

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        self._gate.wait(30)
        with self._store.reading() as conn:
            yield conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_queries_share_the_concurrency_limit(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    write_history(store)
    gate = threading.Event()
    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(
        GatedStore(store, gate),  # type: ignore[arg-type]
        registry,
        clock=lambda: NOW,
        max_concurrent_queries=1,
        max_queued_queries=0,
    )
    query = {"query": "recorder_node_cpu_usage_cores"}
    try:
        with (
            serving(create_app(deps)) as url,
            httpx.Client(base_url=url + API, timeout=30) as client,
        ):
            holding = threading.Thread(
                target=client.get, args=("/query",), kwargs={"params": query}
            )
            holding.start()
            time.sleep(0.3)  # it holds the only slot
            refused = httpx.post(
                url + API + "/query_range", data={**query, "start": "0", "end": "1", "step": "1"}
            )
            gate.set()
            holding.join()
            assert client.get("/query", params=query).json()["status"] == "success"
    finally:
        gate.set()
        store.close()
    assert refused.status_code == 503
    assert refused.json()["errorType"] == "unavailable"
    assert "retry-after" in refused.headers

"""Access control of the HTTP API (``--auth kubernetes``) against the simulator's TokenReview
and SubjectAccessReview endpoints over HTTP, on a real SQLite history: the route walk, allow
and deny by namespace on every read endpoint and on ``/metrics``, filtered answers, 401, 403,
413, 429, and a review outage answered 503."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from recorder.api.app import AppDeps, create_app
from recorder.api.kubernetes_access import KubernetesAccess
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.kube.config import from_api_url
from recorder.kube.credentials import Credentials, FileToken
from recorder.kube.reviews import ReviewClient
from recorder.simulator.access import AccessControl, AccessMiddleware, Identity
from recorder.simulator.reviews import ReviewMiddleware, ReviewPolicy, ReviewUser
from recorder.simulator.server import SimulatorServer
from recorder.simulator.server import create_app as simulator_app
from recorder.store import Store, open_store
from tests.servers import serving

NOW = 1_714_557_600.0
T0 = int(NOW * 1000) - 60_000
OPEN = {"/livez", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/"}
"""The routes that answer without credentials: the probes, the API's description and the
pages (whose assets under /static are open file by file: tests/integration/test_api_pages.py)."""

TOKENS = {
    "alice": "alice-token-0123456789",  # namespace a only
    "root": "root-token-0123456789",  # cluster-wide and /metrics
    "prom": "prom-token-0123456789",  # /metrics only
    "nobody": "nobody-token-0123456789",  # authenticated, allowed nothing
}


def _write(store: Store) -> Store:
    for namespace, pod in (("a", "web"), ("b", "db")):
        store.write(
            Batch(
                Kind.CONTAINER,
                (Sample(SeriesKey.for_container(namespace, pod, "c"), T0, 30_000, 10**8, 2**20),),
            ),
            now_ms=T0,
        )
    store.write(
        Batch(Kind.NODE, (Sample(SeriesKey.for_node("n1"), T0, 30_000, 10**9, 2**30),)),
        now_ms=T0,
    )
    return store


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('access') / 'recorder.db'}")
    store.migrate()
    yield _write(store)
    store.close()


@pytest.fixture(scope="module")
def policy() -> ReviewPolicy:
    policy = ReviewPolicy()
    policy.add(TOKENS["alice"], "alice", ReviewUser(namespaces=frozenset({"a"})))
    policy.add(
        TOKENS["root"],
        "root",
        ReviewUser(cluster_wide=True, non_resource_urls=frozenset({"/metrics"})),
    )
    policy.add(TOKENS["prom"], "prom", ReviewUser(non_resource_urls=frozenset({"/metrics"})))
    policy.add(TOKENS["nobody"], "nobody", ReviewUser())
    return policy


@pytest.fixture(scope="module")
def api_server(policy: ReviewPolicy) -> Iterator[str]:
    """The simulator as the API server: reviews by ``policy``."""
    app = simulator_app(None)
    with SimulatorServer(ReviewMiddleware(app, policy)) as server:
        yield server.url


def _deps(store: Store, api_url: str, **options: Any) -> AppDeps:
    registry = CollectorRegistry()
    client = ReviewClient(from_api_url(api_url), timeout_seconds=options.pop("timeout", 2.0))
    return AppDeps(
        store,
        registry,
        http_registry=registry,
        clock=lambda: NOW,
        authorizer=KubernetesAccess(client, cache_seconds=options.pop("cache_seconds", 30.0)),
        **options,
    )


@pytest.fixture(scope="module")
def app(history: Store, api_server: str) -> FastAPI:
    return create_app(_deps(history, api_server))


@pytest.fixture(scope="module")
def url(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


def get(url: str, path: str, who: str | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
    return httpx.get(f"{url}{path}", params=params, headers=headers, timeout=10)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def route_paths(routes: Iterable[Any], prefix: str = "") -> Iterator[str]:
    """Every path template of ``routes``, through included routers (FastAPI keeps them as
    nodes of their own) and mounts."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from route_paths(inner.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(getattr(route, "path", None), str):
            yield prefix + route.path
            yield from route_paths(getattr(route, "routes", None) or (), prefix + route.path)


def test_every_route_outside_the_allow_list_needs_credentials(app: FastAPI, url: str) -> None:
    paths = {_concrete(path) for path in route_paths(app.routes)}
    assert {"/api/v1/history", "/api/v1/series", "/metrics"} <= paths, paths
    answered = {path: get(url, path).status_code for path in sorted(paths) if path not in OPEN}
    assert answered and all(status == 401 for status in answered.values()), answered
    assert {path: get(url, path).status_code for path in OPEN & paths} == {
        path: 200 for path in OPEN & paths
    }
    # The pages' assets are open file by file, not as a folder: a path beside them needs a token.
    assert get(url, "/static/page/page.js").status_code == 200
    assert get(url, "/static/page/other.js").status_code == 401
    assert get(url, "/static").status_code == 401


def test_a_route_added_later_is_guarded_and_needs_cluster_wide_access(
    history: Store, api_server: str
) -> None:
    app = create_app(_deps(history, api_server))

    async def extra(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("every namespace's secrets")

    app.router.routes.append(Route("/api/v1/extra", extra))  # a plain Starlette route
    ran: list[str] = []

    @app.get("/api/v1/costly")  # a FastAPI route: refused before its handler runs
    async def costly() -> dict[str, str]:
        ran.append("costly")
        return {"every": "namespace"}

    with serving(app) as url:
        for path in ("/api/v1/extra", "/api/v1/costly"):
            assert get(url, path).status_code == 401
            assert get(url, path, "alice").status_code == 403
            assert ran == []
            assert get(url, path, "root").status_code == 200
    assert ran == ["costly"]


def test_unauthenticated_requests_get_401_with_a_bearer_challenge(url: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-known-token"},
        {"Authorization": "Basic x"},
    ):
        answer = httpx.get(f"{url}/api/v1/series", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["errorType"] == "unauthorized"
        assert "not-a-known-token" not in answer.text


READS = [
    ("/api/v1/history", {"resource": "cpu"}),
    ("/api/v1/series", {}),
    ("/api/v1/summary", {"group_by": "namespace"}),
    ("/api/v1/recommendations", {"min_points": "1"}),
]


def _namespaces(path: str, answer: httpx.Response) -> set[str]:
    body = answer.json()
    if path == "/api/v1/recommendations":
        return {row["namespace"] for row in body["data"]["recommendations"]}
    if path == "/api/v1/summary":
        return {group["group"] for group in body["data"]["groups"]}
    items = body["data"]["series"] if path == "/api/v1/history" else body["data"]
    return {item["labels"]["namespace"] for item in items}


@pytest.mark.parametrize(("path", "params"), READS, ids=[p for p, _ in READS])
def test_a_namespace_is_read_only_by_those_allowed(
    url: str, path: str, params: dict[str, str]
) -> None:
    allowed = get(url, path, "alice", namespace="a", **params)
    assert allowed.status_code == 200, allowed.text
    assert "X-Recorder-Filtered-Namespaces" not in allowed.headers
    denied = get(url, path, "alice", namespace="b", **params)
    assert denied.status_code == 403
    assert denied.json()["errorType"] == "forbidden"
    assert "namespace b" in denied.json()["error"]
    assert get(url, path, "root", namespace="b", **params).status_code == 200
    assert get(url, path, "prom", namespace="a", **params).status_code == 403


@pytest.mark.parametrize(("path", "params"), READS, ids=[p for p, _ in READS])
def test_an_answer_over_namespaces_is_filtered_to_the_readable_ones(
    url: str, path: str, params: dict[str, str]
) -> None:
    filtered = get(url, path, "alice", **params)
    assert filtered.status_code == 200, filtered.text
    assert filtered.headers["X-Recorder-Filtered-Namespaces"] == "a"
    assert _namespaces(path, filtered) == {"a"}
    whole = get(url, path, "root", **params)
    assert "X-Recorder-Filtered-Namespaces" not in whole.headers
    assert _namespaces(path, whole) == {"a", "b"}
    assert get(url, path, "nobody", **params).status_code == 403


NODE_READS = [*READS[:2], ("/api/v1/summary", {"group_by": "node"})]


@pytest.mark.parametrize(("path", "params"), NODE_READS, ids=[p for p, _ in NODE_READS])
def test_node_data_needs_cluster_wide_access(url: str, path: str, params: dict[str, str]) -> None:
    assert get(url, path, "alice", kind="node", **params).status_code == 403
    answer = get(url, path, "root", kind="node", **params)
    assert answer.status_code == 200, answer.text


def test_metrics_needs_get_on_the_non_resource_url(url: str) -> None:
    assert get(url, "/metrics").status_code == 401
    assert get(url, "/metrics", "alice").status_code == 403
    assert get(url, "/metrics", "prom").status_code == 200
    answer = get(url, "/metrics", "root")
    assert answer.status_code == 200
    assert get(url, "/api/v1/series", "prom").status_code == 403  # /metrics is all it may read
    denials = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'recorder_auth_denials_total\{reason="(\w+)"\} (\S+)', answer.text)
    }
    assert denials["unauthenticated"] >= 1 and denials["forbidden"] >= 1


def test_decisions_are_cached(url: str, policy: ReviewPolicy) -> None:
    get(url, "/api/v1/series", "alice", namespace="a")
    before = (policy.token_reviews, policy.access_reviews)
    for _ in range(3):
        assert get(url, "/api/v1/series", "alice", namespace="a").status_code == 200
    assert (policy.token_reviews, policy.access_reviews) == before


def test_bodies_beyond_the_limit_get_413_on_every_route(url: str) -> None:
    body = b"x" * (AppDeps.max_request_body_bytes + 1)
    for path in ("/livez", "/api/v1/series", "/metrics", "/nowhere"):
        answer = httpx.post(f"{url}{path}", content=body)
        assert answer.status_code == 413, path
        assert answer.json()["errorType"] == "too_large"
    assert httpx.get(f"{url}/livez").status_code == 200


def test_a_client_beyond_its_rate_gets_429_with_retry_after(
    history: Store, api_server: str
) -> None:
    app = create_app(_deps(history, api_server, rate_limit=0.01, rate_limit_burst=2))
    with serving(app) as url:
        statuses = [get(url, "/api/v1/series", "alice", namespace="a") for _ in range(3)]
        assert [s.status_code for s in statuses] == [200, 200, 429]
        assert int(statuses[-1].headers["Retry-After"]) >= 1
        assert statuses[-1].json()["errorType"] == "rate_limited"
        # another identity has its own budget; the probes have none
        assert get(url, "/api/v1/series", "root").status_code == 200
        assert all(get(url, "/livez").status_code == 200 for _ in range(5))
        # without a token, the client is its address
        assert [get(url, "/api/v1/series").status_code for _ in range(3)] == [401, 401, 429]


def test_unknown_tokens_beyond_the_rate_get_no_review(
    history: Store, api_server: str, policy: ReviewPolicy
) -> None:
    app = create_app(_deps(history, api_server, rate_limit=0.01, rate_limit_burst=2))
    with serving(app) as url:
        assert get(url, "/api/v1/series", "alice", namespace="a").status_code == 200
        for n in range(2):  # the address' budget, spent on tokens nobody knows
            answer = httpx.get(
                f"{url}/api/v1/series", headers={"Authorization": f"Bearer random-{n}"}
            )
            assert answer.status_code == 401
        reviews = policy.token_reviews
        flood = [
            httpx.get(f"{url}/api/v1/series", headers={"Authorization": f"Bearer random-x{n}"})
            for n in range(5)
        ]
        assert {a.status_code for a in flood} == {429}
        assert policy.token_reviews == reviews  # no TokenReview for any of them
        # a token known already is its own client, with its own budget
        assert get(url, "/api/v1/series", "alice", namespace="a").status_code == 200


def test_a_review_outage_is_503_never_a_traceback(
    history: Store, api_server: str, policy: ReviewPolicy
) -> None:
    app = create_app(_deps(history, api_server))
    with serving(app) as url:
        policy.available = False
        try:
            answer = get(url, "/api/v1/series", "alice", namespace="a")
        finally:
            policy.available = True
        assert answer.status_code == 503
        assert answer.json()["errorType"] == "unavailable"
        assert "Traceback" not in answer.text and TOKENS["alice"] not in answer.text
        assert get(url, "/api/v1/series", "alice", namespace="a").status_code == 200


def test_an_unreachable_api_server_is_503(history: Store, tmp_path: Path) -> None:
    with SimulatorServer(simulator_app(None)) as gone:
        address = gone.url
    app = create_app(_deps(history, address, timeout=1.0))
    with serving(app) as url:
        answer = get(url, "/api/v1/history", "root", resource="cpu")
        assert answer.status_code == 503
        body = answer.json()
        assert body["errorType"] == "unavailable" and "Kubernetes API" in body["error"]
        assert json.dumps(body).find("Traceback") < 0


def test_a_websocket_needs_a_token_allowed_cluster_wide(history: Store, api_server: str) -> None:
    """No route speaks WebSocket today; the guard closes one opened without the right token
    before any route sees it."""
    app = create_app(_deps(history, api_server))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def connect(who: str | None) -> None:
        headers = [(b"authorization", f"Bearer {TOKENS[who]}".encode())] if who else []
        scope = {
            "type": "websocket",
            "path": "/api/v1/stream",
            "headers": headers,
            "query_string": b"",
            "client": ("127.0.0.1", 1),
        }
        await app(scope, receive, send)

    for who in (None, "alice"):
        sent.clear()
        asyncio.run(connect(who))
        assert sent == [{"type": "websocket.close", "code": 1008}], who


def test_the_recorders_own_rotated_token_is_read_again(
    history: Store, policy: ReviewPolicy, tmp_path: Path
) -> None:
    """The API server asks the recorder for its own token too: after a rotation (the kubelet
    writes a new one, the old stops working) a review gets 401 once, the token file is read
    again and the review sent again; no caller sees a 503."""
    control = AccessControl()
    token_file = tmp_path / "token"
    rotating = control.add_rotating_token(Identity("system:serviceaccount:r:r"), token_file)
    app = simulator_app(
        None,
        middleware=[
            Middleware(AccessMiddleware, control=control),
            Middleware(ReviewMiddleware, policy=policy),
        ],
    )
    with SimulatorServer(app) as server:
        config = replace(
            from_api_url(server.url),
            credentials=Credentials(
                token=FileToken(token_file, "the test's token file", reread_seconds=3600)
            ),
        )
        deps = AppDeps(
            history,
            CollectorRegistry(),
            clock=lambda: NOW,
            authorizer=KubernetesAccess(ReviewClient(config, timeout_seconds=2.0)),
        )
        with serving(create_app(deps)) as url:
            assert get(url, "/api/v1/series", "alice", namespace="a").status_code == 200
            rotating.rotate()
            assert get(url, "/api/v1/series", "root").status_code == 200  # a new review
    assert control.rejections == 1


PROMETHEUS = "/prometheus/api/v1"
WARNING = "the answer covers only the 1 namespace the caller may read (a)"


def _prometheus(url: str, route: str, who: str | None, **params: str) -> httpx.Response:
    return get(url, f"{PROMETHEUS}/{route}", who, **params)


def _result_namespaces(answer: httpx.Response) -> set[str]:
    return {item["metric"].get("namespace", "") for item in answer.json()["data"]["result"]}


def test_promql_over_namespaces_is_filtered_with_a_warning(url: str) -> None:
    query = "recorder_container_cpu_usage_cores"
    filtered = _prometheus(url, "query", "alice", query=query)
    assert filtered.status_code == 200, filtered.text
    assert _result_namespaces(filtered) == {"a"}
    assert filtered.json()["warnings"][0].startswith(WARNING)
    assert filtered.headers["X-Recorder-Filtered-Namespaces"] == "a"
    whole = _prometheus(url, "query", "root", query=query)
    assert _result_namespaces(whole) == {"a", "b"}
    assert "warnings" not in whole.json()
    # A selector of every family: alice's answer holds no node series.
    every = _prometheus(url, "query", "alice", query='{__name__=~"recorder_.*cpu.*"}')
    assert every.status_code == 200, every.text
    assert _result_namespaces(every) == {"a"}
    assert "warnings" in every.json()
    assert "" in _result_namespaces(_prometheus(url, "query", "root", query="{__name__=~'.+'}"))
    # A sum over it is alice's part only, and says so.
    total = _prometheus(url, "query_range", "alice", query=f"sum({query})", start=str(NOW - 120))
    assert total.status_code == 400  # no end and step: parameters are still checked
    summed = httpx.post(
        f"{url}{PROMETHEUS}/query_range",
        data={"query": f"sum({query})", "start": str(NOW - 60), "end": str(NOW), "step": "60"},
        headers={"Authorization": f"Bearer {TOKENS['alice']}"},
    )
    assert summed.status_code == 200, summed.text
    assert summed.json()["data"]["result"][0]["values"][0][1] == "0.1"
    assert "warnings" in summed.json()


def test_promql_naming_an_unreadable_namespace_or_nodes_is_403(url: str) -> None:
    for query in (
        'sum(recorder_container_cpu_usage_cores{namespace="b"})',
        'recorder_container_cpu_usage_cores{namespace="a"} / on() '
        'sum(recorder_container_cpu_usage_cores{namespace="b"})',
        "recorder_node_cpu_usage_cores",
        "max_over_time(recorder_node_memory_working_set_bytes[5m])",
    ):
        denied = _prometheus(url, "query", "alice", query=query)
        assert denied.status_code == 403, (query, denied.text)
        assert denied.json()["status"] == "error"
        assert denied.json()["errorType"] == "forbidden"
        assert _prometheus(url, "query", "root", query=query).status_code == 200
    pinned = _prometheus(
        url, "query", "alice", query='recorder_container_cpu_usage_cores{namespace="a"}'
    )
    assert pinned.status_code == 200, pinned.text
    assert _result_namespaces(pinned) == {"a"}
    assert "warnings" not in pinned.json()
    assert "X-Recorder-Filtered-Namespaces" not in pinned.headers
    assert _prometheus(url, "query", "nobody", query="up").status_code == 403


def test_promql_series_and_label_routes_are_filtered_too(url: str) -> None:
    values = _prometheus(url, "label/namespace/values", "alice")
    assert values.status_code == 200, values.text
    assert values.json()["data"] == ["a"]
    assert "warnings" in values.json()
    assert _prometheus(url, "label/namespace/values", "root").json()["data"] == ["a", "b"]
    assert "node" not in _prometheus(url, "labels", "alice").json()["data"]
    assert "node" in _prometheus(url, "labels", "root").json()["data"]
    series = _prometheus(url, "series", "alice", **{"match[]": '{__name__=~".+"}'})
    assert {s["namespace"] for s in series.json()["data"]} == {"a"}
    denied = _prometheus(url, "series", "alice", **{"match[]": '{namespace="b"}'})
    assert denied.status_code == 403
    denied = _prometheus(
        url, "label/node/values", "alice", **{"match[]": "recorder_node_cpu_usage_cores"}
    )
    assert denied.status_code == 403


def test_promql_buildinfo_and_metadata_answer_any_authenticated_caller(url: str) -> None:
    for route in ("status/buildinfo", "metadata"):
        for who in ("alice", "nobody", "prom", "root"):
            assert _prometheus(url, route, who).status_code == 200, (route, who)
        assert _prometheus(url, route, None).status_code == 401

"""The Prometheus HTTP API's read side under ``/prometheus/api/v1`` (what Grafana's
Prometheus data source calls): ``query``, ``query_range``, ``series``, ``labels``,
``label/<name>/values`` (GET, and form-encoded POST where Prometheus takes it),
``metadata`` and ``status/buildinfo``.

Each route reads its parameters (query string and form body, the body's winning, as Go's
``FormValue``), hands one blocking function over ``recorder.query.promql.endpoints`` to the
``QueryLimiter`` and answers Prometheus' envelope.

Access control (``recorder.api.visibility``): a caller allowed cluster-wide reads everything;
a caller allowed some namespaces gets answers filtered to them (no node series) with a
``warnings`` entry, and 403 for a selector pinning a namespace it may not read
(``namespace="b"``) or matching node series only; ``metadata`` and ``status/buildinfo`` answer
any authenticated caller. Errors: ``bad_data`` 400 (the app's
``QueryError`` handler), ``execution`` 422, ``timeout`` and ``unavailable`` 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge

from recorder import __version__
from recorder.api.deps import AppDeps
from recorder.api.errors import error_response
from recorder.api.limits import QueryLimiter
from recorder.api.visibility import Visibility, Visible, visibility
from recorder.errors import QueryError
from recorder.query.promql import endpoints
from recorder.query.promql.cache import ResultCache
from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.reach import Reach, matches_reach, query_reach
from recorder.query.promql.source import StoreSource
from recorder.query.promql.wire import dumps

__all__ = ["PREFIX", "prometheus_router", "result_cache"]

PREFIX = "/prometheus/api/v1"
MAX_BODY_BYTES = 256 * 1024
MAX_PARAMETERS = 256
MAX_LABEL_SERIES = 2_000_000
"""How many series ``labels`` and ``label/<name>/values`` may look through: they read label
sets only (no samples), and Grafana asks them without ``match[]`` to fill its variables."""
CACHE_BYTES = 64 * 2**20
"""The result cache's bound (``recorder.query.promql.cache``)."""
PROMETHEUS_VERSION = "2.42.0"
"""The Prometheus whose semantics the evaluator follows (Debian's, which CI compares with)."""


class Params:
    """A request's parameters: the query string's, then the form body's (which win)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        if len(pairs) > MAX_PARAMETERS:
            raise QueryError(f"more than {MAX_PARAMETERS} parameters")
        self.pairs = pairs

    def get(self, name: str) -> str | None:
        found = [value for key, value in self.pairs if key == name]
        return found[-1] if found else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


async def _params(request: Request) -> Params:
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise QueryError(f"the form body is larger than {MAX_BODY_BYTES} bytes")
            try:
                text = bytes(body).decode()
                form = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_PARAMETERS)
            except (UnicodeDecodeError, ValueError):
                raise QueryError("the form body is not valid UTF-8 form encoding") from None
            pairs += form
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise QueryError(f"parameter {key[:40]!r} holds a NUL character")
    return Params(pairs)


Access = Annotated[Visibility, Depends(visibility)]
EVERYTHING = Visible()


async def visible_part(access: Visibility, reach: Reach) -> Visible:
    """What a caller sees of a query reaching ``reach``: everything when it may read
    cluster-wide; else ``Forbidden`` (403) for a selector of node series only or pinning a
    namespace it may not read, and the namespaces it may read (node series left out)."""
    visible = await access.namespaces(None)
    if not visible.filtered:
        return visible
    if reach.nodes:
        await access.cluster()
    for namespace in sorted(reach.namespaces):
        await access.namespaces(namespace)
    if reach.pinned:
        return EVERYTHING  # every selector names a namespace it may read: nothing to filter
    return Visible((visible.namespaces or frozenset()) | reach.namespaces)


def cache_scope(visible: Visible) -> str:
    """The result cache's scope of what ``visible`` lets a caller see: answers computed over
    different sets of series never share an entry."""
    if visible.namespaces is None:
        return ""
    return "\n".join(sorted(visible.namespaces)) or "\n"


def _success(data: Any, visible: Visible = EVERYTHING) -> Response:
    """Prometheus' envelope: the evaluation's own warnings (tiers), and for an answer filtered
    by access control a ``warnings`` entry saying so, with the history API's
    ``X-Recorder-Filtered-Namespaces`` header."""
    warnings: list[str] = []
    if isinstance(data, endpoints.Answered):
        data, warnings = data.data, list(data.warnings)
    body: dict[str, Any] = {"status": "success", "data": data}
    warning = visible.warning()
    if warning is not None:
        warnings.append(warning)
    if warnings:
        body["warnings"] = warnings
    return Response(dumps(body), media_type="application/json", headers=visible.headers())


def result_cache(registry: CollectorRegistry | None) -> ResultCache:
    """The step-aligned result cache, its lookups counted by outcome in ``registry``."""
    lookups = Counter(
        "recorder_promql_cache_lookups",
        "Range queries of the Prometheus API by what the step-aligned result cache held: "
        "hit (every step), partial (the past steps), miss, bypass (a query with @ or a "
        "negative offset, not cached)",
        ["result"],
        registry=registry if registry is not None else CollectorRegistry(),
    )
    for outcome in ("hit", "partial", "miss", "bypass"):
        lookups.labels(outcome)
    cache = ResultCache(CACHE_BYTES, on_lookup=lambda outcome: lookups.labels(outcome).inc())
    Gauge(
        "recorder_promql_cache_bytes",
        f"Bytes held by the Prometheus API's result cache (at most {CACHE_BYTES // 2**20} MiB)",
        registry=registry if registry is not None else CollectorRegistry(),
    ).set_function(lambda: cache.size)
    return cache


def prometheus_router(deps: AppDeps, queries: QueryLimiter) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    cache = result_cache(deps.http_registry)

    def source(visible: Visible, max_series: int = deps.max_series) -> StoreSource:
        return StoreSource(
            deps.store,
            max_series=max_series,
            max_samples=deps.max_samples,
            namespaces=visible.namespaces,
        )

    async def run(work: Callable[[], Any], visible: Visible) -> Response:
        try:
            return await queries.run(lambda: _success(work(), visible))
        except ExecutionError as exc:
            return error_response(422, "execution", str(exc))

    @router.api_route("/query", methods=["GET", "POST"])
    async def query(request: Request, access: Access) -> Response:
        p = await _params(request)
        now_ms = deps.now_ms()
        visible = await visible_part(access, query_reach(p.get("query")))
        return await run(
            lambda: endpoints.query(
                source(visible), p.get("query"), p.get("time"), now_ms, deps.max_points
            ),
            visible,
        )

    @router.api_route("/query_range", methods=["GET", "POST"])
    async def query_range(request: Request, access: Access) -> Response:
        p = await _params(request)
        visible = await visible_part(access, query_reach(p.get("query")))
        now_ms = deps.now_ms()
        return await run(
            lambda: endpoints.query_range(
                source(visible),
                p.get("query"),
                p.get("start"),
                p.get("end"),
                p.get("step"),
                deps.max_points,
                cache=cache,
                now_ms=now_ms,
                scope=cache_scope(visible),
            ),
            visible,
        )

    @router.api_route("/series", methods=["GET", "POST"])
    async def series(request: Request, access: Access) -> Response:
        p = await _params(request)
        visible = await visible_part(access, matches_reach(p.all("match[]")))
        return await run(
            lambda: endpoints.series(
                source(visible), p.all("match[]"), p.get("start"), p.get("end")
            ),
            visible,
        )

    @router.api_route("/labels", methods=["GET", "POST"])
    async def labels(request: Request, access: Access) -> Response:
        p = await _params(request)
        visible = await visible_part(access, matches_reach(p.all("match[]")))
        return await run(
            lambda: endpoints.label_names(
                source(visible, MAX_LABEL_SERIES), p.all("match[]"), p.get("start"), p.get("end")
            ),
            visible,
        )

    @router.get("/label/{name}/values")
    async def label_values(name: str, request: Request, access: Access) -> Response:
        p = await _params(request)
        visible = await visible_part(access, matches_reach(p.all("match[]")))
        return await run(
            lambda: endpoints.label_values(
                source(visible, MAX_LABEL_SERIES),
                name,
                p.all("match[]"),
                p.get("start"),
                p.get("end"),
            ),
            visible,
        )

    # The metric names and their help, and the version Grafana's health check asks: no
    # history, so any authenticated caller may read them (the routes take ``visibility`` to
    # say they decide, and ask nothing of it).
    @router.get("/metadata", dependencies=[Depends(visibility)])
    async def metadata(request: Request) -> Response:
        p = await _params(request)
        return _success(endpoints.metadata(p.get("metric")))

    @router.get("/status/buildinfo", dependencies=[Depends(visibility)])
    async def buildinfo() -> Response:
        return _success(
            {
                "version": PROMETHEUS_VERSION,
                "revision": f"kube-metrics-recorder {__version__}",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
            }
        )

    return router

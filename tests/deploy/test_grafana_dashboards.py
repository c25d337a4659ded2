"""Every query of every Grafana dashboard in deploy/grafana/dashboards, run against a recorder
holding a history (tests/promql_support.py: nodes and containers over three hours, workloads,
requests and limits) as Grafana would send it: the variables' ``label_values`` by the
label-values endpoint, every panel's target by ``query_range`` with the variables, the interval
and the aligned range of tests/deploy/grafana_support.py (an instant target, as the bar gauges'
and the whole-range values are, by ``query`` at the range's end). Each must answer data, with no
error and no warning, and carry the labels its legend names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.api.tokens import TokenAccess
from recorder.domain import DEFAULT_CLUSTER
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import Store, open_store
from tests.deploy.grafana_support import (
    LabelValuesQuery,
    RangeQuery,
    dashboards,
    datasource_with_token,
    go_duration,
    grafana_interval,
    label_values_query,
    panel_request,
    panels,
    parse_interval_ms,
    query_variables,
    range_query,
    round_interval_ms,
    substitute,
    unexpected_warnings,
)
from tests.promql_support import SPAN_MS, T0_MS, history, write_store
from tests.servers import serving

SCRAPE_INTERVAL_MS = parse_interval_ms(datasource_with_token()["jsonData"]["timeInterval"])
"""The data source's ``timeInterval`` in deploy/grafana/provisioning (the recorder's default
poll interval)."""

CHOSEN = {
    "cluster": DEFAULT_CLUSTER,
    "namespace": "shop",
    "workload": "web",
    "pod": "web-1",
    "node": "n1",
}
"""The value picked for each variable: one whose containers have requests and limits, so the
right-sizing panels have something to show (each must be among the values Grafana is offered)."""

RANGES = {
    "3h": (T0_MS, T0_MS + SPAN_MS),
    "30d": (T0_MS + SPAN_MS - 30 * 86_400_000, T0_MS + SPAN_MS),
}
"""Time ranges ending with the history: the three hours it covers (steps of the minimum
interval), and a month (hour steps, ``$__range`` of 30 days)."""

EXPECTED_DASHBOARDS = {"cluster-overview", "namespace", "workload", "pod", "node", "right-sizing"}


def _targets() -> list[tuple[str, str, Any, Any]]:
    return [
        (name, f"{name}: {panel['title']} [{target['refId']}]", panel, target)
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


TARGETS = _targets()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("grafana") / "recorder.db"
    store = open_store(f"sqlite:///{path}")
    try:
        store.migrate()
        write_store(store, history())
        yield store
    finally:
        store.close()


def _serve(store: Store, authorizer: TokenAccess | None = None) -> AbstractContextManager[str]:
    registry, _ = build_registry(SnapshotHolder())
    clock = lambda: (T0_MS + SPAN_MS) / 1000 + 60  # noqa: E731
    deps = AppDeps(store, registry, clock=clock)
    if authorizer is not None:
        deps = AppDeps(store, registry, clock=clock, authorizer=authorizer)
    return serving(create_app(deps))


@pytest.fixture(scope="module")
def recorder_url(store: Store) -> Iterator[str]:
    with _serve(store) as base:
        yield base


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def _label_values(
    http: httpx.Client, base: str, query: LabelValuesQuery, span: tuple[int, int]
) -> list[str]:
    """As Grafana asks: GET with ``match[]`` when the query has a selector, and the range."""
    params: dict[str, Any] = {"start": span[0] / 1000, "end": span[1] / 1000}
    if query.match is not None:
        params["match[]"] = query.match
    response = http.get(f"{base}/prometheus/api/v1/label/{query.label}/values", params=params)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    assert not unexpected_warnings(body), body
    values: list[str] = body["data"]
    return values


def test_the_dashboards_are_the_documented_ones() -> None:
    assert set(dashboards()) == EXPECTED_DASHBOARDS
    uids = [d["uid"] for d in dashboards().values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(EXPECTED_DASHBOARDS))
def test_every_query_uses_the_recorders_prometheus_data_source(name: str) -> None:
    dashboard = dashboards()[name]
    source = {"type": "prometheus", "uid": "${datasource}"}
    (chooser,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert chooser["name"] == "datasource" and chooser["query"] == "prometheus"
    assert chooser["current"]["value"] == "kube-metrics-recorder"  # the provisioned uid
    for variable in query_variables(dashboard):
        assert variable["datasource"] == source, variable["name"]
        assert variable["name"] in CHOSEN
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(set(ids)) == len(ids)
    for panel in panels(dashboard):
        assert panel["datasource"] == source, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", source) == source, panel["title"]
            assert target["range"] is not target["instant"], panel["title"]  # one kind


@pytest.mark.parametrize("span", RANGES.values(), ids=list(RANGES))
@pytest.mark.parametrize("name", sorted(EXPECTED_DASHBOARDS))
def test_every_variable_offers_values(
    name: str, span: tuple[int, int], recorder_url: str, http: httpx.Client
) -> None:
    """Each variable in order, the ones before it substituted, as Grafana refreshes them."""
    chosen: dict[str, str] = {}
    for variable in query_variables(dashboards()[name]):
        query = label_values_query(variable)
        assert query.label == variable["name"]
        match = None if query.match is None else substitute(query.match, chosen)
        assert match is None or "$" not in match, match
        values = _label_values(http, recorder_url, LabelValuesQuery(query.label, match), span)
        assert CHOSEN[query.label] in values, (query, values)
        chosen[query.label] = CHOSEN[query.label]


def _ask(
    http: httpx.Client,
    base: str,
    panel: dict[str, Any],
    target: dict[str, Any],
    span: tuple[int, int],
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, RangeQuery]:
    """The target as Grafana sends it, the variables as ``CHOSEN``."""
    request = panel_request(
        panel, target, CHOSEN, from_ms=span[0], to_ms=span[1],
        scrape_interval_ms=SCRAPE_INTERVAL_MS,
    )  # fmt: skip
    assert "$" not in request.query.expr, f"a variable no dashboard defines: {request.query}"
    url = f"{base}/prometheus/api/v1/{request.path}"
    return http.post(url, data=request.form, headers=headers), request.query


@pytest.mark.parametrize("span", RANGES.values(), ids=list(RANGES))
@pytest.mark.parametrize(("panel", "target"), [t[2:] for t in TARGETS], ids=[t[1] for t in TARGETS])
def test_every_panel_query_answers_data(
    panel: dict[str, Any],
    target: dict[str, Any],
    span: tuple[int, int],
    recorder_url: str,
    http: httpx.Client,
) -> None:
    response, query = _ask(http, recorder_url, panel, target, span)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (query, body)
    assert not unexpected_warnings(body), (query, body)
    instant = bool(target.get("instant"))
    assert body["data"]["resultType"] == ("vector" if instant else "matrix")
    series = body["data"]["result"]
    assert series, f"no data: {query}"
    assert all(item["value"] if instant else item["values"] for item in series), query
    # The legend names each series by labels it has (else Grafana shows an empty name).
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
        assert all(label in item["metric"] for item in series), (label, series[0]["metric"])


@pytest.mark.parametrize(
    ("span_ms", "panel", "step", "rate"),
    [
        # 11.25 s per pixel: the 30 s scrape interval is the minimum
        (3 * 3_600_000, {"gridPos": {"w": 12}}, "30s", "2m0s"),
        # 67.5 s per pixel rounds to 1m (90 s would round to 2m)
        (86_400_000, {"gridPos": {"w": 16}}, "1m", "2m0s"),
        (7 * 86_400_000, {"gridPos": {"w": 24}}, "5m", "5m30s"),  # 315 s rounds to 5m
        (30 * 86_400_000, {"gridPos": {"w": 12}}, "1h", "1h0m30s"),  # 2,700 s rounds to 1h
        (
            400 * 86_400_000,
            {"gridPos": {"w": 1}},
            "1d",
            "24h0m30s",
        ),  # 80 pixels: 432,000 s rounds to 1d
        # 100,000 points asked: 346 s rounds to 5m ($__rate_interval follows it), but 11,000
        # points at most make the step 1h
        (400 * 86_400_000, {"gridPos": {"w": 24}, "maxDataPoints": 100_000}, "1h", "5m30s"),
        # the panel's own minimum interval
        (3_600_000, {"gridPos": {"w": 24}, "interval": "2m"}, "2m", "2m30s"),
    ],
)
def test_grafanas_interval_rule(span_ms: int, panel: dict[str, Any], step: str, rate: str) -> None:
    query = range_query(
        "x[$__interval] $__rate_interval $__range $__range_s $__range_ms $__interval_ms",
        panel,
        from_ms=1_000_000_000_000,
        to_ms=1_000_000_000_000 + span_ms,
        scrape_interval_ms=SCRAPE_INTERVAL_MS,
    )
    assert grafana_interval(query.step_ms) == step
    assert query.expr == (
        f"x[{step}] {rate} {span_ms // 1000}s {span_ms // 1000} {span_ms} {query.step_ms}"
    )
    assert query.start_ms % query.step_ms == 0 and query.end_ms % query.step_ms == 0
    assert query.start_ms <= 1_000_000_000_000 < query.start_ms + query.step_ms


def test_the_helpers_write_durations_as_grafana_and_go_do() -> None:
    assert [go_duration(ms) for ms in (500, 30_000, 120_000, 150_000, 3_600_000)] == [
        "500ms",
        "30s",
        "2m0s",
        "2m30s",
        "1h0m0s",
    ]
    assert [grafana_interval(ms) for ms in (500, 90_000, 7_200_000, 86_400_000)] == [
        "500ms",
        "1m",
        "2h",
        "1d",
    ]
    assert round_interval_ms(86_400) == 60_000 and round_interval_ms(10**12) == 31_536_000_000


TOKEN = "grafana-token-0123456789abcdef"
TEAM_TOKEN = "team-token-0123456789abcdef"


def test_a_guarded_recorder_answers_the_token_the_data_source_sends(
    store: Store, tmp_path: Path, http: httpx.Client
) -> None:
    """``--auth tokens``: the data source's commented header lines, uncommented and expanded as
    Grafana expands ``${RECORDER_GRAFANA_TOKEN}``, let every dashboard's first query through;
    without them the recorder answers 401, and a token scoped to a namespace gets that
    namespace only, with a warning."""
    source = datasource_with_token()
    value = source["secureJsonData"]["httpHeaderValue1"].replace("${RECORDER_GRAFANA_TOKEN}", TOKEN)
    headers = {source["jsonData"]["httpHeaderName1"]: value}
    (tmp_path / "tokens").write_text(f"{TOKEN},grafana\n{TEAM_TOKEN},team,shop\n")
    with _serve(store, TokenAccess(tmp_path / "tokens")) as base:
        url = f"{base}/prometheus/api/v1/label/namespace/values"
        assert http.get(url).status_code == 401
        assert "shop" in http.get(url, headers=headers).json()["data"]
        team = {"Authorization": f"Bearer {TEAM_TOKEN}"}
        scoped = http.get(url, headers=team).json()  # filtered to its namespace, and says so
        assert scoped["data"] == ["shop"] and scoped["warnings"]
        for name, dashboard in dashboards().items():
            panel = next(p for p in panels(dashboard) if p.get("targets"))
            target = panel["targets"][0]
            assert _ask(http, base, panel, target, RANGES["3h"])[0].status_code == 401, name
            answer = _ask(http, base, panel, target, RANGES["3h"], headers)[0].json()
            assert answer["status"] == "success" and answer["data"]["result"], (name, answer)

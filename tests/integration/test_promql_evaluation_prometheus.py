"""The recorder's Prometheus API answers the PromQL corpus (data/promql_corpus.yaml) exactly as
a real Prometheus (Debian's 2.42) does over the same samples, on SQLite and on PostgreSQL.

The samples (tests/promql_support.py) go into the recorder's database through the writer and
compaction (two hours in chunks, the last in the head) and into Prometheus' TSDB through
``promtool tsdb create-blocks-from openmetrics``; one Prometheus serves them for the whole
module. Each query is asked of both over HTTP and the answers must match: the same status
and resultType, the same label sets, the same timestamps, values within a relative 1e-9 (and
in Prometheus' order where it defines one: ``topk``/``bottomk`` of an instant query).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recorder.api.app import AppDeps, create_app
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import open_store
from tests.conftest import fresh_postgres_database
from tests.promql_support import T0_MS, Track, differences, history, prometheus, write_store
from tests.servers import serving

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "promql_corpus.yaml").read_text())

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus and promtool (apt-get install prometheus)",
)


def _seconds(relative: float) -> str:
    return repr(T0_MS / 1000 + relative)


def _case_id(case: dict[str, Any]) -> str:
    when = (
        f"@{case['time']}" if "time" in case else f"[{case['start']}:{case['end']}:{case['step']}]"
    )
    return f"{case['query']} {when}"


@pytest.fixture(scope="module")
def tracks() -> list[Track]:
    return history()


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory, tracks: list[Track]) -> Iterator[str]:
    with prometheus(tmp_path_factory.mktemp("prometheus"), tracks) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh SQLite file or PostgreSQL database for the module (as tests/conftest.py's
    ``database_url``, whose databases live for one test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'recorder.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def recorder_url(module_database_url: str, tracks: list[Track]) -> Iterator[str]:
    """The recorder's HTTP API over a database holding the tracks."""
    store = open_store(module_database_url)
    try:
        store.migrate()
        write_store(store, tracks)
        registry, _ = build_registry(SnapshotHolder())
        deps = AppDeps(store, registry, clock=lambda: T0_MS / 1000 + 4 * 3600)
        with serving(create_app(deps)) as base:
            yield base
    finally:
        store.close()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def _ask(
    http: httpx.Client, base: str, prefix: str, case: dict[str, Any], *, form: bool
) -> dict[str, Any]:
    if "time" in case:
        path = "query"
        params = {"query": case["query"], "time": _seconds(case["time"])}
    else:
        path = "query_range"
        params = {
            "query": case["query"],
            "start": _seconds(case["start"]),
            "end": _seconds(case["end"]),
            "step": str(case["step"]),
        }
    url = f"{base}{prefix}/api/v1/{path}"
    if form:
        response = http.post(url, data=params)
    else:
        response = http.get(url, params=params)
    body: dict[str, Any] = response.json()
    return body


def _ordered(query: str) -> bool:
    return query.lstrip("( ").startswith(("topk", "bottomk"))


@pytest.mark.parametrize("case", CORPUS, ids=[_case_id(c) for c in CORPUS])
def test_the_recorder_answers_as_prometheus(
    case: dict[str, Any], recorder_url: str, prometheus_url: str, http: httpx.Client
) -> None:
    theirs = _ask(http, prometheus_url, "", case, form=False)
    assert theirs["status"] == "success", f"the corpus holds a query Prometheus refuses: {theirs}"
    ours = _ask(http, recorder_url, "/prometheus", case, form="step" in case)
    found = differences(ours, theirs, ordered="time" in case and _ordered(case["query"]))
    assert not found, "\n".join([f"{_case_id(case)}:", *found])


def test_the_corpus_covers_the_subset() -> None:
    text = " ".join(case["query"] for case in CORPUS)
    for word in (
        "sum(", "avg(", "min(", "max(", "count(", "topk(", "bottomk(", "quantile(",
        "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
        "quantile_over_time", "last_over_time", "scalar(", "vector(", "clamp_min",
        "clamp_max", "label_replace", "absent(", "offset", "@ start()", "@ end()", " by ",
        " without ", "on(", "ignoring(", "group_left", "group_right", " bool ", "=~", "!~",
        "!=", " % ", " ^ ", "atan2", " == ", " >= ", " <= ",
    ):  # fmt: skip
        assert word in text, word
    assert len(CORPUS) >= 100
    assert sum("time" in c for c in CORPUS) > 30 and sum("step" in c for c in CORPUS) > 30


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("rate(recorder_container_cpu_usage_cores[5m])", "rate()"),
        ("histogram_quantile(0.9, recorder_container_cpu_usage_cores)", "histogram_quantile()"),
        ("stddev_over_time(recorder_node_cpu_usage_cores[5m])", "stddev_over_time()"),
        ("stdvar(recorder_node_cpu_usage_cores)", "stdvar()"),
        ('count_values("v", recorder_node_cpu_usage_cores)', "count_values()"),
        ("max_over_time(recorder_node_cpu_usage_cores[10m:1m])", "subqueries"),
    ],
)
def test_what_prometheus_answers_outside_the_subset_is_bad_data_naming_it(
    query: str, named: str, recorder_url: str, prometheus_url: str, http: httpx.Client
) -> None:
    case = {"query": query, "time": 3600}
    assert _ask(http, prometheus_url, "", case, form=False)["status"] == "success"
    response = http.get(
        f"{recorder_url}/prometheus/api/v1/query",
        params={"query": query, "time": _seconds(3600)},
    )
    body = response.json()
    assert (response.status_code, body["errorType"]) == (400, "bad_data")
    assert named in body["error"] and "not supported" in body["error"]


WINDOW = {"start": _seconds(9000), "end": _seconds(10800)}
"""Two hours and a half after the start until the end: report-x and n2 had stopped."""


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("series", {"match[]": ["recorder_node_cpu_usage_cores"]}),
        ("series", {"match[]": ['{namespace="shop"}', "recorder_node_memory_working_set_bytes"]}),
        ("series", {"match[]": ['{workload_kind=~"Pod|Job"}'], **WINDOW}),
        ("series", {"match[]": ['{__name__=~"recorder_node.*"}'], **WINDOW}),
        ("series", {"match[]": ["recorder_container_cpu_limit_cores"]}),
        ("labels", {}),
        ("labels", {"match[]": ["recorder_node_cpu_usage_cores"]}),
        ("label/__name__/values", {}),
        ("label/pod/values", {}),
        ("label/workload/values", {"match[]": ['{namespace="shop"}']}),
    ],
)
def test_series_and_labels_answer_as_prometheus(
    path: str,
    params: dict[str, Any],
    recorder_url: str,
    prometheus_url: str,
    http: httpx.Client,
) -> None:
    """match[] and time windows (Prometheus answers labels by whole TSDB blocks, so only
    series are asked over a window, one that no series' block edge blurs)."""
    theirs = http.get(f"{prometheus_url}/api/v1/{path}", params=params).json()
    url = f"{recorder_url}/prometheus/api/v1/{path}"
    # as Grafana asks: series and labels by form POST, label values by GET
    posted = path in ("series", "labels")
    ours = (http.post(url, data=params) if posted else http.get(url, params=params)).json()
    assert theirs["status"] == "success" and ours["status"] == "success"

    def canonical(data: list[Any]) -> list[Any]:
        return sorted(
            data, key=lambda item: sorted(item.items()) if isinstance(item, dict) else item
        )

    assert canonical(ours["data"]) == canonical(theirs["data"])
    assert ours["data"], "the request should find something"

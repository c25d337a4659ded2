"""The Grafana dashboards against ``recorder demo`` (the simulator, its cluster objects, a few
polls), as a user who opens them sees them: each variable's values offered by the
label-values endpoint, the first of each chosen (Grafana's default) and every panel query
answered without error or warning; and, for each dashboard, a choice of variables among those
offered under which every panel shows data (the demo has a workload with requests and limits,
a node, a pod)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.grafana_support import (
    dashboards,
    datasource_with_token,
    label_values_query,
    panel_request,
    panels,
    parse_interval_ms,
    query_variables,
    substitute,
    unexpected_warnings,
)
from tests.processes import free_port, start_recorder, stop, wait_for

pytestmark = pytest.mark.slow

SCRAPE_INTERVAL_MS = parse_interval_ms(datasource_with_token()["jsonData"]["timeInterval"])
WINDOW_MS = 15 * 60_000
AHEAD_MS = 60_000
"""The dashboards' time range: the last 15 minutes and the next one. The demo has recorded for
seconds only: the steps of a range ending now are aligned down to 30 s and could all precede
its first samples."""
MAX_CHOICES = 40
"""Variable choices tried per dashboard before giving up on finding one with data everywhere."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_recorder(
        ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "2s",
         "--database-url", f"sqlite:///{folder / 'recorder.db'}"],
        folder,
        log=folder / "demo.log",
    )  # fmt: skip

    def recorded() -> bool:
        """A sample of usage with the requests and limits in effect: the cluster objects are
        read after the first poll, so from the simulator's second sample on (15 s)."""
        for query in (
            "count(recorder_container_memory_limit_bytes)",
            "count(recorder_node_cpu_usage_cores)",
        ):
            body = httpx.post(f"{base}/prometheus/api/v1/query", data={"query": query}, timeout=5)
            if not body.json()["data"]["result"]:
                return False
        return True

    try:
        wait_for(recorded, 60, "the demo to record usage with requests and limits")
        yield base
    finally:
        stop(process)


def _values(http: httpx.Client, base: str, variable: dict[str, Any], chosen: dict[str, str],
            span: tuple[int, int]) -> list[str]:  # fmt: skip
    query = label_values_query(variable)
    params: dict[str, Any] = {"start": span[0] / 1000, "end": span[1] / 1000}
    if query.match is not None:
        params["match[]"] = substitute(query.match, chosen)
    body = http.get(f"{base}/prometheus/api/v1/label/{query.label}/values", params=params).json()
    assert body["status"] == "success" and not unexpected_warnings(body), body
    values: list[str] = sorted(body["data"])  # the variables' sort: alphabetical
    return values


def _choices(
    http: httpx.Client, base: str, board: dict[str, Any], span: tuple[int, int]
) -> Iterator[dict[str, str]]:
    """Every choice of the dashboard's variables, in the order Grafana offers them."""

    def walk(variables: list[dict[str, Any]], chosen: dict[str, str]) -> Iterator[dict[str, str]]:
        if not variables:
            yield dict(chosen)
            return
        first, rest = variables[0], variables[1:]
        for value in _values(http, base, first, chosen, span):
            yield from walk(rest, {**chosen, first["name"]: value})

    yield from walk(query_variables(board), {})


def _answers(
    http: httpx.Client, base: str, board: dict[str, Any], chosen: dict[str, str],
    span: tuple[int, int],
) -> dict[str, bool]:  # fmt: skip
    """Each target's title and whether it answered data; any error or warning fails."""
    found = {}
    for panel in panels(board):
        for target in panel["targets"]:
            request = panel_request(
                panel, target, chosen, from_ms=span[0], to_ms=span[1],
                scrape_interval_ms=SCRAPE_INTERVAL_MS,
            )  # fmt: skip
            query = request.query
            response = http.post(f"{base}/prometheus/api/v1/{request.path}", data=request.form)
            body = response.json()
            assert response.status_code == 200 and body["status"] == "success", (query, body)
            assert not unexpected_warnings(body), (query, body)
            found[f"{panel['title']} [{target['refId']}]"] = bool(body["data"]["result"])
    return found


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_the_dashboard_on_the_demo(name: str, demo: str) -> None:
    board = dashboards()[name]
    now_ms = int(time.time() * 1000)
    span = (now_ms - WINDOW_MS, now_ms + AHEAD_MS)
    with httpx.Client(timeout=30) as http:
        choices = _choices(http, demo, board, span)
        first = next(choices)
        empty: dict[str, list[str]] = {}
        for chosen in itertools.chain([first], itertools.islice(choices, MAX_CHOICES)):
            answers = _answers(http, demo, board, chosen, span)
            empty[str(chosen)] = [title for title, data in answers.items() if not data]
            if not empty[str(chosen)]:
                return
    pytest.fail(f"no choice of variables shows data in every panel: {empty}")

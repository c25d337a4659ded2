"""The Grafana dashboards of deploy/grafana/dashboards as Grafana would query them: the panels'
targets, the template variables, and the interval variables Grafana computes for a time range
and a panel width.

The rule implemented is Grafana's own for a Prometheus data source, for a dashboard shown in
UTC: the browser's (``rangeutil.calculateInterval`` and ``roundInterval`` in @grafana/data),
then the server's (``pkg/promlib/models/query.go``):

- ``maxDataPoints`` is the panel's own, else its width in pixels: a panel ``gridPos.w`` columns
  wide on a 1920-pixel screen is ``w * 80`` pixels (Grafana's grid has 24 columns);
- the browser's interval is ``(to - from) / maxDataPoints`` rounded to Grafana's table of round
  intervals (``ROUND_INTERVALS``: 67.5 s becomes 1m, 90 s 2m), at least the panel's minimum
  interval, else the data source's scrape interval (``timeInterval``);
- the server takes it as the minimum step: the step is that interval, or
  ``(to - from) / maxDataPoints`` rounded when that is larger, and at least
  ``(to - from) / 11,000`` rounded (Prometheus' limit of 11,000 points); ``start`` and ``end``
  are the range's ends rounded down to a multiple of the step;
- ``$__interval`` is the step written as Grafana writes it (the largest whole unit: ``30s``,
  ``1m``, ``2h``), ``$__interval_ms`` in milliseconds; ``$__rate_interval`` is
  ``max(browser interval + scrape interval, 4 * scrape interval)`` (15 s without a
  ``timeInterval``), written as Go writes a duration (``2m0s``); ``$__range`` is the range in
  whole seconds with an ``s`` (``10800s``), ``$__range_s`` the bare number, ``$__range_ms`` the
  milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.support import DEPLOY

DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
PROVISIONING_DIR = DEPLOY / "grafana" / "provisioning"
SCHEMA_CHECK_DIR = DEPLOY / "grafana" / "schema-check"

SCREEN_PX = 1920
GRID_COLUMNS = 24
SAFE_RESOLUTION = 11_000
DEFAULT_MIN_INTERVAL_MS = 15_000

ROUND_INTERVALS: tuple[tuple[int, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)
"""Grafana's ``roundInterval``: an interval below the first number (ms) becomes the second."""
YEAR_MS = 31_536_000_000

Obj = dict[str, Any]


def dashboards() -> dict[str, Obj]:
    return {
        path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: Obj) -> Iterator[Obj]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def query_variables(dashboard: Obj) -> list[Obj]:
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>[A-Za-z_][\w]*)\)$")


@dataclass(frozen=True, slots=True)
class LabelValuesQuery:
    """A variable's ``label_values(metric{...}, label)``: what Grafana asks of
    ``label/<label>/values?match[]=<match>``."""

    label: str
    match: str | None


def label_values_query(variable: Obj) -> LabelValuesQuery:
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    found = LABEL_VALUES.match(text.strip())
    if found is None:
        raise ValueError(f"variable {variable['name']}: not a label_values() query: {text}")
    return LabelValuesQuery(found["label"], found["match"])


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}`` for the dashboard's own variables."""
    for name, value in values.items():
        text = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, text)
    return text


def round_interval_ms(interval_ms: float) -> int:
    for below, rounded in ROUND_INTERVALS:
        if interval_ms < below:
            return rounded
    return YEAR_MS


def grafana_interval(interval_ms: int) -> str:
    """Grafana's ``FormatInterval``: the largest whole unit (``90s`` is ``1m``)."""
    for unit, size in (("y", YEAR_MS), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if interval_ms >= size:
            return f"{interval_ms // size}{unit}"
    if interval_ms >= 1_000:
        return f"{interval_ms // 1_000}s"
    return f"{max(interval_ms, 1)}ms"


def go_duration(ms: int) -> str:
    """Go's ``time.Duration.String()`` for whole milliseconds: ``2m0s``, ``1h0m0s``, ``500ms``."""
    if ms < 1_000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:g}"
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def parse_interval_ms(text: str) -> int:
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if found is None:
        raise ValueError(f"not a Grafana interval: {text}")
    scale = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    scale |= {"w": 604_800_000, "y": YEAR_MS}
    return int(found[1]) * scale[found[2]]


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """One target as Grafana sends it to ``query_range`` (times in milliseconds)."""

    expr: str
    start_ms: int
    end_ms: int
    step_ms: int


def range_query(
    expr: str, panel: Obj, *, from_ms: int, to_ms: int, scrape_interval_ms: int
) -> RangeQuery:
    """``expr`` with Grafana's interval and range variables, and the step and aligned range
    Grafana would send for ``panel`` over ``[from_ms, to_ms]`` (see the module's docstring)."""
    span_ms = to_ms - from_ms
    max_points = panel.get("maxDataPoints") or panel["gridPos"]["w"] * SCREEN_PX // GRID_COLUMNS
    # The browser: $__interval, at least the panel's or else the data source's minimum.
    low_limit_ms = parse_interval_ms(panel["interval"]) if panel.get("interval") else 0
    low_limit_ms = low_limit_ms or scrape_interval_ms or 1
    interval_ms = max(round_interval_ms(span_ms / max_points), low_limit_ms)
    # The server (promlib): that interval is the minimum step; never over 11,000 points.
    calculated = span_ms / max_points
    step_ms = interval_ms if calculated < interval_ms else round_interval_ms(calculated)
    step_ms = max(step_ms, round_interval_ms(span_ms / SAFE_RESOLUTION))
    scrape_interval_ms = scrape_interval_ms or DEFAULT_MIN_INTERVAL_MS
    rate_ms = max(interval_ms + scrape_interval_ms, 4 * scrape_interval_ms)
    range_s = round(span_ms / 1000)
    for variable, value in (
        ("$__interval_ms", str(step_ms)),
        ("$__interval", grafana_interval(step_ms)),
        ("$__rate_interval_ms", str(rate_ms)),
        ("$__rate_interval", go_duration(rate_ms)),
        ("$__range_ms", str(span_ms)),
        ("$__range_s", str(range_s)),
        ("$__range", f"{range_s}s"),
    ):
        expr = expr.replace(variable, value).replace("${" + variable[1:] + "}", value)
    return RangeQuery(expr, from_ms // step_ms * step_ms, to_ms // step_ms * step_ms, step_ms)


@dataclass(frozen=True, slots=True)
class PanelRequest:
    """What Grafana POSTs for one target: to ``query_range`` over the aligned range, or, for an
    instant target, to ``query`` at the range's end (unaligned, as promlib sends it)."""

    path: str
    form: dict[str, str]
    query: RangeQuery


def panel_request(
    panel: Obj,
    target: Obj,
    values: dict[str, str],
    *,
    from_ms: int,
    to_ms: int,
    scrape_interval_ms: int,
) -> PanelRequest:
    expr = substitute(target["expr"], values)
    query = range_query(
        expr, panel, from_ms=from_ms, to_ms=to_ms, scrape_interval_ms=scrape_interval_ms
    )
    if target.get("instant"):
        return PanelRequest("query", {"query": query.expr, "time": str(to_ms / 1000)}, query)
    form = {
        "query": query.expr,
        "start": str(query.start_ms / 1000),
        "end": str(query.end_ms / 1000),
        "step": str(query.step_ms / 1000),
    }
    return PanelRequest("query_range", form, query)


def provisioning_file(*parts: str) -> Path:
    return PROVISIONING_DIR.joinpath(*parts)


DATASOURCE_FILE = PROVISIONING_DIR / "datasources" / "kube-metrics-recorder.yaml"


def datasource_with_token() -> Obj:
    """The provisioned data source with its commented bearer-token lines uncommented, as the
    file tells an operator to do (``${RECORDER_GRAFANA_TOKEN}`` left for Grafana to expand)."""
    text = DATASOURCE_FILE.read_text()
    text = text.replace("# httpHeaderName1:", "httpHeaderName1:").replace(
        "# secureJsonData:\n    #   httpHeaderValue1:", "secureJsonData:\n      httpHeaderValue1:"
    )
    (source,) = yaml.safe_load(text)["datasources"]
    assert isinstance(source, dict)
    return source


SKETCH_WARNING = re.compile(
    r"^quantile_over_time was answered from quantile sketches, within \d+(\.\d+)?% relative error$"
)
"""The one warning a panel may carry: a p95 over blocks of statistics is read from their
quantile sketches, and the answer says within what error (README, Prometheus API: tiers)."""


def unexpected_warnings(body: dict[str, Any]) -> list[str]:
    """The warnings of an answer other than the sketch's stated error."""
    return [w for w in body.get("warnings", ()) if not SKETCH_WARNING.match(w)]

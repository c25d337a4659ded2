"""What the Prometheus HTTP API's read endpoints answer, over a ``Source``: the ``data`` of
``query``, ``query_range``, ``series``, ``labels``, ``label/<name>/values`` and ``metadata``
(the HTTP routes in ``recorder.api.prometheus_api`` only read parameters and write the
envelope)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recorder.errors import QueryError
from recorder.query.promql.cache import ResultCache
from recorder.query.promql.catalog import ALL_FAMILIES
from recorder.query.promql.evaluation import Result, instant_query, range_query
from recorder.query.promql.matchers import Matcher, MatchOp
from recorder.query.promql.source import Source
from recorder.query.promql.syntax import SelectorNode, parse
from recorder.query.promql.timing import parse_duration_ms, parse_time_ms
from recorder.query.promql.values import METRIC_NAME, Labels
from recorder.query.promql.wire import result_data
from recorder.timeutil import MAX_TIME_MS

MAX_MATCHES = 64
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_EVERY_SERIES = (Matcher.of(METRIC_NAME, MatchOp.REGEX, ".+"),)


@dataclass(frozen=True, slots=True)
class Answered:
    """A ``query`` or ``query_range`` answer: the envelope's ``data`` and ``warnings``."""

    data: dict[str, Any]
    warnings: tuple[str, ...]

    @classmethod
    def of(cls, result: Result, max_points: int | None) -> Answered:
        return cls(result_data(result, max_points), result.warnings)


def query(
    source: Source,
    text: str | None,
    time: str | None,
    now_ms: int,
    max_points: int | None = None,
) -> Answered:
    if not text:
        raise QueryError('invalid parameter "query": query must not be empty')
    time_ms = parse_time_ms(time, "time") if time else now_ms
    return Answered.of(instant_query(source, text, time_ms), max_points)


def query_range(
    source: Source,
    text: str | None,
    start: str | None,
    end: str | None,
    step: str | None,
    max_points: int | None = None,
    *,
    cache: ResultCache | None = None,
    now_ms: int = 0,
    scope: str = "",
) -> Answered:
    """``cache``: where past steps are kept (``now_ms`` ages its entries; ``scope`` names
    what the caller may see)."""
    start_ms = parse_time_ms(start or "", "start")
    end_ms = parse_time_ms(end or "", "end")
    if end_ms < start_ms:
        raise QueryError('invalid parameter "end": end timestamp must not be before start time')
    step_ms = parse_duration_ms(step or "", "step")
    if not text:
        raise QueryError('invalid parameter "query": query must not be empty')
    if cache is None:
        result = range_query(source, text, start_ms, end_ms, step_ms)
    else:
        result = cache.range_query(
            source, text, start_ms, end_ms, step_ms, now_ms=now_ms, scope=scope
        )
    return Answered.of(result, max_points)


def _selectors(matches: Sequence[str]) -> list[tuple[Matcher, ...]]:
    if len(matches) > MAX_MATCHES:
        raise QueryError(f"at most {MAX_MATCHES} match[] parameters are accepted")
    out = []
    for text in matches:
        node = parse(text)
        if not isinstance(node, SelectorNode) or node.offset_ms or node.at is not None:
            raise QueryError(
                f'invalid parameter "match[]": {text[:200]!r} is not a series selector'
            )
        out.append(node.matchers)
    return out


def _window(start: str | None, end: str | None) -> tuple[int, int]:
    start_ms = parse_time_ms(start, "start") if start else -MAX_TIME_MS
    end_ms = parse_time_ms(end, "end") if end else MAX_TIME_MS
    if end_ms < start_ms:
        raise QueryError('invalid parameter "end": end timestamp must not be before start time')
    return start_ms, end_ms


def _matching(
    source: Source, matches: Sequence[str], start: str | None, end: str | None
) -> list[Labels]:
    start_ms, end_ms = _window(start, end)
    found: set[Labels] = set()
    for matchers in _selectors(matches) if matches else [_EVERY_SERIES]:
        found.update(source.series(matchers, start_ms, end_ms))
    return sorted(found)


def series(
    source: Source, matches: Sequence[str], start: str | None, end: str | None
) -> list[dict[str, str]]:
    if not matches:
        raise QueryError("no match[] parameter provided")
    return [dict(labels) for labels in _matching(source, matches, start, end)]


def label_names(
    source: Source, matches: Sequence[str], start: str | None, end: str | None
) -> list[str]:
    return sorted({name for labels in _matching(source, matches, start, end) for name, _ in labels})


def label_values(
    source: Source, name: str, matches: Sequence[str], start: str | None, end: str | None
) -> list[str]:
    if not _LABEL_NAME.fullmatch(name):
        raise QueryError(f'invalid label name: "{name[:200]}"')
    found = _matching(source, matches, start, end)
    return sorted({value for labels in found for key, value in labels if key == name})


def metadata(metric: str | None) -> dict[str, list[dict[str, str]]]:
    return {
        family.name: [{"type": "gauge", "help": family.help, "unit": family.unit}]
        for family in ALL_FAMILIES
        if metric is None or metric == "" or metric == family.name
    }

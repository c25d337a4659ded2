"""Parsing and validation of history query parameters (pure), for the HTTP API and the CLI.

Every function either returns a value the store can use as it is (integers of milliseconds
within ``MIN_TIME_MS..MAX_TIME_MS``, a step no longer than the longest range) or raises
``QueryError`` with a message that names the parameter. Times and durations follow the one
grammar of ``recorder.timeutil``. No client input reaches the store as an overflowing integer,
an infinite or NaN float, or a date ``datetime`` cannot represent.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.domain import QueryKind
from recorder.errors import DurationError, QueryError
from recorder.selectors import LabelSelector, parse_label_selector
from recorder.timeutil import (
    DAY_MS,
    MIN_TIME_MS,
    SECOND_MS,
    floor_to,
    parse_duration_ms,
    parse_time_ms,
)

__all__ = [
    "MAX_STEP_MS",
    "MIN_STEP_MS",
    "SNAP_FROM_MS",
    "Window",
    "day_window",
    "parse_group_by",
    "parse_range",
    "parse_selector",
    "parse_step_ms",
    "parse_time_ms",
]

MIN_STEP_MS = SECOND_MS
MAX_STEP_MS = 400 * DAY_MS
"""The default longest step: the default longest range (``RECORDER_QUERY_MAX_RANGE``)."""


def parse_range(
    start: str | None,
    end: str | None,
    *,
    now_ms: int,
    default_ms: int,
    max_range_ms: int,
    names: tuple[str, str] = ("start", "end"),
) -> tuple[int, int]:
    """``start`` and ``end`` (times as ``timeutil.parse_time_ms`` reads them; absent: ``now``
    and ``default_ms`` before ``end``), checked to be in order and no further apart than
    ``max_range_ms``. ``names`` are what messages call them (``--start`` on the command line)."""
    start_name, end_name = names
    end_ms = parse_time_ms(end, end_name, now_ms) if end else now_ms
    if start:
        start_ms = parse_time_ms(start, start_name, now_ms)
    else:
        start_ms = max(end_ms - default_ms, MIN_TIME_MS)
    if start_ms > end_ms:
        raise QueryError(f"{start_name} must not be after {end_name}")
    if end_ms - start_ms > max_range_ms:
        raise QueryError(
            f"the range is longer than the maximum of {max_range_ms // DAY_MS} days "
            f"({max_range_ms // SECOND_MS}s): narrow it"
        )
    return start_ms, end_ms


SNAP_FROM_MS = 2 * DAY_MS
"""Windows of a summary or ``recorder top`` at least this long are snapped to whole UTC days."""


@dataclass(frozen=True, slots=True)
class Window:
    """The window a whole-window query (``/api/v1/summary``, ``recorder top``) answers, and
    the one asked for."""

    start_ms: int
    end_ms: int
    asked_start_ms: int
    asked_end_ms: int

    @property
    def snapped(self) -> bool:
        return (self.start_ms, self.end_ms) != (self.asked_start_ms, self.asked_end_ms)


def day_window(start_ms: int, end_ms: int) -> Window:
    """A window of ``SNAP_FROM_MS`` or more (both ends inclusive) snapped to whole UTC days:
    as many days as it is long (rounded up), ending at the last midnight at or before its end,
    so ``--since 7d`` answers the 7 whole days before today from day rollups alone (today is
    not rolled up yet). Shorter windows, and windows of whole days, stay as asked."""
    length = end_ms - start_ms
    if length < SNAP_FROM_MS:
        return Window(start_ms, end_ms, start_ms, end_ms)
    end = floor_to(end_ms + 1, DAY_MS)
    days = -(-length // DAY_MS)
    return Window(max(end - days * DAY_MS, MIN_TIME_MS), end - 1, start_ms, end_ms)


def parse_step_ms(text: str | None, *, max_ms: int = MAX_STEP_MS, name: str = "step") -> int | None:
    """A duration in ``timeutil``'s grammar (``30s``, ``5m``, ``1h30m``, ``1.5d``, ``300``);
    at least one second and at most ``max_ms`` (the longest range a query may ask for). Blank
    is ``None``. ``name`` is what messages call it (``--since`` for ``recorder top``)."""
    if text is None or text == "":
        return None
    try:
        step_ms = parse_duration_ms(text)
    except DurationError as exc:
        if exc.too_long:
            step_ms = max_ms + 1
        else:
            raise QueryError(f"{name}={text!r}: {exc.problem}") from None
    if step_ms > max_ms:
        raise QueryError(
            f"{name}={text!r} is longer than the longest range a query may cover "
            f"({max_ms // SECOND_MS}s): use a shorter one"
        )
    if step_ms < MIN_STEP_MS:
        raise QueryError(f"{name}={text!r} is shorter than 1s")
    return step_ms


def parse_selector(text: str | None) -> LabelSelector | None:
    """A Kubernetes label selector (``app=web,tier!=db``); blank means none."""
    if text is None or text.strip() == "":
        return None
    return parse_label_selector(text)


def parse_group_by(text: str, kind: QueryKind | None = None) -> str:
    """``cluster``, ``namespace``, ``pod``, ``container``, ``node``, ``workload`` or
    ``label:<key>`` with a valid Kubernetes label key (the same rule as a selector's keys);
    with ``kind``, also that the grouping fits it (``node`` goes with nodes only,
    ``container`` with containers, ``workload`` with pods or containers)."""
    grouping = _grouping(text)
    if kind is QueryKind.WORKLOAD:
        raise QueryError(
            "a summary groups series: use kind=pod or kind=container with group_by=workload"
        )
    if grouping == "workload" and kind is QueryKind.NODE:
        raise QueryError(
            "nodes belong to no workload: group_by=workload goes with kind=pod or kind=container"
        )
    if kind is not None:
        if grouping != "cluster" and (grouping == "node") != (kind is QueryKind.NODE):
            raise QueryError("group_by=node goes with kind=node, and only with it")
        if grouping == "container" and kind is QueryKind.POD:
            raise QueryError("group_by=container goes with kind=container")
    return grouping


def _grouping(text: str) -> str:
    if text in ("cluster", "namespace", "pod", "container", "node", "workload"):
        return text
    key = text.removeprefix("label:")
    if key != text and key.strip() == key and key:
        try:
            selector = parse_label_selector(key)
        except QueryError as exc:
            raise QueryError(f"group_by={text!r}: {exc}") from None
        requirements = selector.requirements
        if len(requirements) == 1 and (requirements[0].key, requirements[0].operator) == (
            key,
            "exists",
        ):
            return text
    raise QueryError(
        f"group_by={text!r}: use cluster, namespace, pod, container, node, workload or label:<key>"
    )

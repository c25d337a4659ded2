"""Typed Metrics API items to domain samples, one rejection per bad item (pure).

Rules:
- a node or pod with no name, a null/invalid timestamp or an invalid window is rejected whole;
- a container with no name, missing ``cpu``/``memory`` usage, or an unparseable or negative
  quantity is rejected alone; its pod's other containers are kept;
- a pod with an empty container list produces no samples and no rejection (metrics-server
  reports pods whose containers it has not scraped yet that way);
- a missing ``window`` is stored as 0 (unknown); values are never invented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from recorder import units
from recorder.domain import Batch, Kind, PodRef, Rejection, Sample, SeriesKey
from recorder.errors import DecodeError, QuantityError
from recorder.kube import wire

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z")
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Parsers:
    """Memoized timestamp/window/quantity parsing: a list repeats the same strings a lot."""

    def __init__(self) -> None:
        self.timestamps: dict[str, int] = {}
        self.windows: dict[str, int] = {}

    def timestamp_ms(self, text: str | None) -> int:
        if text is None:
            raise _Reject("null_timestamp", "timestamp is null or missing")
        cached = self.timestamps.get(text)
        if cached is None:
            if not _RFC3339.match(text):
                raise _Reject("bad_timestamp", f"timestamp {text!r} is not RFC 3339")
            moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
            cached = (moment - _EPOCH) // _ONE_MS
            self.timestamps[text] = cached
        return cached

    def window_ms(self, text: str | None) -> int:
        if text is None:
            return 0
        cached = self.windows.get(text)
        if cached is None:
            try:
                nanoseconds = units.parse_go_duration(text)
            except QuantityError as exc:
                raise _Reject("bad_window", str(exc)) from exc
            if nanoseconds < 0:
                raise _Reject("bad_window", f"window {text!r} is negative")
            cached = -(-nanoseconds // _NS_PER_MS)  # round up: 1µs is not 0
            self.windows[text] = cached
        return cached


def _usage(usage: Mapping[str, str] | None) -> tuple[int, int]:
    if not usage:
        raise _Reject("missing_usage", "usage is missing or empty")
    cpu_text = usage.get("cpu")
    memory_text = usage.get("memory")
    if cpu_text is None or memory_text is None:
        missing = " and ".join(
            n for n, v in (("cpu", cpu_text), ("memory", memory_text)) if v is None
        )
        raise _Reject("missing_usage", f"usage has no {missing}")
    try:
        cpu = units.cpu_nanocores(cpu_text)
        memory = units.memory_bytes(memory_text)
    except QuantityError as exc:
        raise _Reject("bad_quantity", str(exc)) from exc
    if cpu < 0 or memory < 0:
        raise _Reject("negative_usage", f"usage is negative: cpu={cpu_text} memory={memory_text}")
    return cpu, memory


def normalize_nodes(items: Iterable[wire.NodeMetrics]) -> Batch:
    parsers = _Parsers()
    samples: list[Sample] = []
    rejections: list[Rejection] = []
    for item in items:
        name = item.metadata.name if item.metadata else None
        try:
            if not name:
                raise _Reject("missing_name", "metadata.name is missing")
            timestamp_ms = parsers.timestamp_ms(item.timestamp)
            window_ms = parsers.window_ms(item.window)
            cpu, memory = _usage(item.usage)
        except _Reject as bad:
            rejections.append(Rejection(Kind.NODE, name or "?", bad.reason, bad.detail))
            continue
        samples.append(Sample(SeriesKey.for_node(name), timestamp_ms, window_ms, cpu, memory))
    return Batch(Kind.NODE, tuple(samples), {}, tuple(rejections))


def normalize_pods(items: Iterable[wire.PodMetrics]) -> Batch:
    parsers = _Parsers()
    samples: list[Sample] = []
    labels: dict[PodRef, Mapping[str, str]] = {}
    rejections: list[Rejection] = []
    for item in items:
        meta = item.metadata or wire.ObjectMeta()
        pod, namespace = meta.name, meta.namespace
        try:
            if not pod or not namespace:
                raise _Reject("missing_name", "metadata.name or metadata.namespace is missing")
            timestamp_ms = parsers.timestamp_ms(item.timestamp)
            window_ms = parsers.window_ms(item.window)
        except _Reject as bad:
            rejections.append(
                Rejection(Kind.CONTAINER, pod or "?", bad.reason, bad.detail, namespace or "")
            )
            continue
        labels[(namespace, pod)] = meta.labels or {}
        for container in item.containers or ():
            try:
                if not container.name:
                    raise _Reject("missing_name", "container name is missing")
                cpu, memory = _usage(container.usage)
            except _Reject as bad:
                rejections.append(
                    Rejection(
                        Kind.CONTAINER,
                        f"{pod}/{container.name or '?'}",
                        bad.reason,
                        bad.detail,
                        namespace,
                    )
                )
                continue
            key = SeriesKey.for_container(namespace, pod, container.name)
            samples.append(Sample(key, timestamp_ms, window_ms, cpu, memory))
    return Batch(Kind.CONTAINER, tuple(samples), labels, tuple(rejections))


def parse_timestamp_ms(text: str) -> int:
    """RFC 3339 to unix milliseconds (for callers outside this module), strict."""
    try:
        return _Parsers().timestamp_ms(text)
    except _Reject as bad:
        raise DecodeError(bad.detail) from None

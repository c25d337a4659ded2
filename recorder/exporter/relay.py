"""``/metrics`` across the two processes of the service.

The worker process polls; the server process answers HTTP. The worker renders the data
gauges' sample lines of each new snapshot (``LineRenderer``, the same fast renderer as
``RecorderRegistry``) and its own self-metrics (``own_exposition``) and sends them over; the
server's ``RelayRegistry`` keeps the latest of each, withdraws a kind whose lines are older
than ``withdraw_after_intervals`` poll intervals (as ``SnapshotHolder`` does in one process)
and serves the body, with its own metrics (HTTP, process, worker) at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from recorder.domain import Kind, Resource, Sample
from recorder.exporter.filters import ExportFilter, exposed_families
from recorder.exporter.holder import WITHDRAW_AFTER_INTERVALS
from recorder.exporter.registry import GZIP_LEVEL, DataBody, generic_exposition
from recorder.exporter.render import SampleLines, headers

_EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class KindLines:
    """The sample lines of one kind's two data families, from one snapshot."""

    kind: Kind
    cpu: bytes
    memory: bytes


@dataclass(frozen=True, slots=True)
class OwnExposition:
    """A registry rendered in both formats; the OpenMetrics one without its ``# EOF``."""

    text: bytes
    openmetrics: bytes


def own_exposition(registry: CollectorRegistry) -> OwnExposition:
    openmetrics = generic_exposition(registry, openmetrics=True)
    return OwnExposition(
        generic_exposition(registry, openmetrics=False), openmetrics.removesuffix(_EOF)
    )


class LineRenderer:
    """Worker side: a snapshot's samples to ``KindLines`` (label texts cached across polls)."""

    def __init__(self, export_filter: ExportFilter | None = None) -> None:
        self._filter = export_filter or ExportFilter()
        self._families = exposed_families(self._filter)
        self._lines = SampleLines(self._filter)

    def render(self, kind: Kind, samples: Sequence[Sample]) -> KindLines | None:
        """``None`` when no family of ``kind`` is exposed (per-container gauges off)."""
        names = {f.resource: f.name for f in self._families if f.kind is kind}
        if not names:
            return None
        cpu, memory = self._lines.render(kind, names[Resource.CPU], names[Resource.MEMORY], samples)
        return KindLines(kind, b"".join(cpu), b"".join(memory))


@dataclass(slots=True)
class _Received:
    lines: KindLines
    at: float
    generation: int


class RelayRegistry:
    """Server side: the latest lines of each kind and the worker's self-metrics, served with
    this process's own registry (``own``) at the end."""

    def __init__(
        self,
        interval_seconds: float,
        export_filter: ExportFilter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        withdraw_after_intervals: int = WITHDRAW_AFTER_INTERVALS,
        process_collectors: bool = True,
        gzip_level: int = GZIP_LEVEL,
    ) -> None:
        self._families = exposed_families(export_filter or ExportFilter())
        self._clock = clock
        self._stale_after = interval_seconds * withdraw_after_intervals
        self._gzip_level = gzip_level
        self.own = CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=self.own)
            PlatformCollector(registry=self.own)
            GCCollector(registry=self.own)
        self._lock = threading.Lock()
        self._latest: dict[Kind, _Received] = {}
        self._generation = 0
        self._worker = OwnExposition(b"", b"")
        self._bodies: dict[bool, DataBody] = {}
        self._bodies_key: tuple[tuple[str, int], ...] = ()

    def publish(self, lines: KindLines) -> None:
        with self._lock:
            self._generation += 1
            self._latest[lines.kind] = _Received(lines, self._clock(), self._generation)

    def set_worker_metrics(self, exposition: OwnExposition) -> None:
        with self._lock:
            self._worker = exposition

    def fresh(self) -> bool:
        """Whether any kind's data is younger than the withdrawal window."""
        now = self._clock()
        with self._lock:
            return any(now - r.at < self._stale_after for r in self._latest.values())

    def exposition(self, *, openmetrics: bool, gzip: bool) -> list[bytes]:
        body = self._data_body(openmetrics, gzip)
        with self._lock:
            worker = self._worker
        own = generic_exposition(self.own, openmetrics=openmetrics)
        tail = (worker.openmetrics if openmetrics else worker.text) + own
        return body.with_tail(tail, gzip=gzip)

    def _data_body(self, openmetrics: bool, gzip: bool) -> DataBody:
        now = self._clock()
        with self._lock:
            current = {
                kind: received
                for kind, received in self._latest.items()
                if now - received.at < self._stale_after
            }
            key = tuple(sorted((k.value, r.generation) for k, r in current.items()))
            if key != self._bodies_key:
                self._bodies.clear()
                self._bodies_key = key
            body = self._bodies.get(openmetrics)
            if body is None:
                chunks: list[bytes] = []
                for family in self._families:
                    chunks.append(headers(family, openmetrics=openmetrics).encode())
                    received = current.get(family.kind)
                    if received is not None:
                        lines = received.lines
                        chunks.append(
                            lines.cpu if family.resource is Resource.CPU else lines.memory
                        )
                body = self._bodies[openmetrics] = DataBody([c for c in chunks if c])
            if gzip:
                body.compress(self._gzip_level)
            return body

"""``RecorderRegistry``: every metric of the recorder in one explicit registry, and the
``/metrics`` body rendered once per published snapshot.

The data gauges are up to ~410,000 samples at 150,000 pods. Their lines (and their gzip
stream) are rendered on the first scrape after a new snapshot and kept until the next one, so
later scrapes, in either format, cost only the small tail of self-metrics and process
metrics, rendered by prometheus-client at every scrape. The gzip stream is one member: the
compressor's state after the data is kept and copied for each scrape, which appends the tail
and the trailer.

``generate_latest(registry)`` (prometheus-client's generic path) produces the same bytes,
collector for collector: the data collector comes first, then everything else.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from recorder.domain import Kind, Resource
from recorder.exporter.collector import DataCollector
from recorder.exporter.filters import ExportFilter, exposed_families
from recorder.exporter.holder import Published, SnapshotHolder
from recorder.exporter.render import SampleLines, headers
from recorder.exporter.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from zlib import _Compress

GZIP_LEVEL = 1
"""zlib level 1: ~9x smaller at 150,000 pods, where level 6 only reaches ~10x for three times
the CPU."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class _Forward(Collector):
    """Exposes another registry's collectors inside this one, after the data."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


@dataclass(slots=True)
class _KindLines:
    generation: int
    cpu: list[bytes]
    memory: list[bytes]


@dataclass(slots=True)
class DataBody:
    """The data gauges' part of a ``/metrics`` body in one format, kept until the data
    changes, with the gzip compressor's state after it (one gzip member per scrape)."""

    chunks: list[bytes]
    gzip_head: bytes | None = None
    gzip_state: _Compress | None = field(default=None, repr=False)

    def compress(self, level: int) -> None:
        if self.gzip_state is None:
            compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
            self.gzip_head = b"".join([compressor.compress(c) for c in self.chunks])
            self.gzip_state = compressor

    def with_tail(self, tail: bytes, *, gzip: bool) -> list[bytes]:
        """The whole body: these chunks then ``tail``, gzipped as one member when asked."""
        if not gzip:
            return [*self.chunks, tail]
        assert self.gzip_state is not None and self.gzip_head is not None
        state = self.gzip_state.copy()
        return [self.gzip_head, state.compress(tail) + state.flush()]


class RecorderRegistry(CollectorRegistry):
    """The data collector, then ``own`` (self-metrics, process, platform and GC collectors)."""

    def __init__(
        self,
        holder: SnapshotHolder,
        export_filter: ExportFilter | None = None,
        *,
        process_collectors: bool = True,
        gzip_level: int = GZIP_LEVEL,
    ) -> None:
        super().__init__(auto_describe=True)
        self.holder = holder
        self.export_filter = export_filter or ExportFilter()
        self.own = CollectorRegistry(auto_describe=True)
        self.metrics = SelfMetrics(self.own, holder)
        if process_collectors:
            ProcessCollector(registry=self.own)
            PlatformCollector(registry=self.own)
            GCCollector(registry=self.own)
        self.register(DataCollector(holder, self.export_filter))
        self.register(_Forward(self.own))
        self._families = exposed_families(self.export_filter)
        self._gzip_level = gzip_level
        self._sample_lines = SampleLines(self.export_filter)
        self._lock = threading.Lock()
        self._lines: dict[Kind, _KindLines] = {}
        self._bodies: dict[bool, DataBody] = {}
        self._bodies_key: tuple[int, int] = (-1, -1)

    def exposition(self, *, openmetrics: bool, gzip: bool) -> list[bytes]:
        """The whole ``/metrics`` body as chunks to send in order (one gzip member when
        ``gzip``)."""
        body = self._data_body(openmetrics, gzip)
        return body.with_tail(generic_exposition(self.own, openmetrics=openmetrics), gzip=gzip)

    def _data_body(self, openmetrics: bool, gzip: bool) -> DataBody:
        view = self.holder.view()
        key = (_generation(view.nodes), _generation(view.containers))
        with self._lock:
            if key != self._bodies_key:
                self._bodies.clear()
                self._bodies_key = key
            body = self._bodies.get(openmetrics)
            if body is not None and (body.gzip_state is not None or not gzip):
                return body
            begun = time.perf_counter()
            if body is None:
                body = self._bodies[openmetrics] = self._render(
                    openmetrics, {Kind.NODE: view.nodes, Kind.CONTAINER: view.containers}
                )
            if gzip:
                body.compress(self._gzip_level)
            self.metrics.render_duration.observe(time.perf_counter() - begun)
            return body

    def _render(self, openmetrics: bool, latest: dict[Kind, Published | None]) -> DataBody:
        chunks: list[bytes] = []
        for family in self._families:
            lines = self._lines_of(family.kind, latest[family.kind])
            chunks.append(headers(family, openmetrics=openmetrics).encode())
            block = lines.cpu if family.resource is Resource.CPU else lines.memory
            chunks.extend(c for c in block if c)
        return DataBody(chunks)

    def _lines_of(self, kind: Kind, published: Published | None) -> _KindLines:
        generation = _generation(published)
        lines = self._lines.get(kind)
        if lines is None or lines.generation != generation:
            cpu_family, memory_family = (f for f in self._families if f.kind is kind)
            samples = published.samples if published is not None else ()
            cpu, memory = self._sample_lines.render(
                kind, cpu_family.name, memory_family.name, samples
            )
            lines = self._lines[kind] = _KindLines(generation, cpu, memory)
        return lines


def generic_exposition(registry: CollectorRegistry, *, openmetrics: bool) -> bytes:
    """prometheus-client's own rendering of ``registry``, in either format."""
    if openmetrics:
        body: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return body
    return generate_latest(registry)


def _generation(published: Published | None) -> int:
    return 0 if published is None else published.generation


def build_registry(
    holder: SnapshotHolder,
    export_filter: ExportFilter | None = None,
    *,
    process_collectors: bool = True,
) -> tuple[RecorderRegistry, SelfMetrics]:
    registry = RecorderRegistry(holder, export_filter, process_collectors=process_collectors)
    return registry, registry.metrics

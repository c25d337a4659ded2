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

Also here, for the service's ``RelayRegistry``, a body kept compressed only: text as raw
deflate ``Segment`` s (sync-flushed, so they concatenate into one deflate stream) and
``GzipAssembly``, which writes them as one gzip member per scrape, with each scrape's tail,
or inflates them piece by piece for a client that does not take gzip.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from recorder.domain import Kind, Resource, Samples
from recorder.exporter.collector import DataCollector
from recorder.exporter.filters import ExportFilter, exposed_families
from recorder.exporter.holder import Published, SnapshotHolder
from recorder.exporter.render import SampleLines, headers
from recorder.exporter.selfmetrics import SelfMetrics

if TYPE_CHECKING:
    from zlib import _Compress

GZIP_LEVEL = 1
"""zlib level 1: ~10x smaller at 150,000 pods (60.6 MB of lines to 6.0 MB in 0.17 s of CPU),
where level 6 reaches 11.5x (5.3 MB) for three times the CPU (0.52 s)."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""A gzip member's header: deflate, no flags, no timestamp, no extra flags, unknown OS."""
PIECE_BYTES = 1 << 20
"""The largest piece of a body handed to the server at once (compressed or inflated)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Text compressed as a raw deflate segment ended by a sync flush, with the CRC-32 and the
    length of the text: segments written one after the other are one deflate stream, so a
    gzip member is assembled from them without decompressing anything (``GzipAssembly``)."""

    data: bytes
    crc: int
    length: int

    def inflated(self) -> Iterator[bytes]:
        """The text again, in pieces of at most ``PIECE_BYTES``."""
        inflater = zlib.decompressobj(_RAW_WBITS)
        data = self.data
        while data:
            piece = inflater.decompress(data, PIECE_BYTES)
            data = inflater.unconsumed_tail
            if piece:
                yield piece


class Deflater:
    """Writes text into one ``Segment``, chunk by chunk (the text is never joined)."""

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _RAW_WBITS)
        self._out: list[bytes] = []
        self._crc = self._length = 0

    def write(self, chunk: bytes) -> None:
        self._crc = zlib.crc32(chunk, self._crc)
        self._length += len(chunk)
        compressed = self._compressor.compress(chunk)
        if compressed:
            self._out.append(compressed)

    def segment(self) -> Segment:
        self._out.append(self._compressor.flush(zlib.Z_SYNC_FLUSH))
        data = b"".join(self._out)
        self._out = []
        return Segment(data, self._crc, self._length)


def deflate(chunks: Iterable[bytes], level: int = GZIP_LEVEL) -> Segment:
    """``chunks`` as one ``Segment``."""
    deflater = Deflater(level)
    for chunk in chunks:
        deflater.write(chunk)
    return deflater.segment()


# CRC-32 of concatenated texts from the CRCs of the parts (zlib's crc32_combine, which
# Python's zlib does not expose): multiplication modulo the reflected CRC-32 polynomial.
_POLYNOMIAL = 0xEDB88320


def _multiply(a: int, b: int) -> int:
    product, bit = 0, 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLYNOMIAL if b & 1 else b >> 1
    return product


def _powers() -> tuple[int, ...]:
    power, powers = 1 << 30, []  # x**1, then x**(2**n)
    for _ in range(32):
        powers.append(power)
        power = _multiply(power, power)
    return tuple(powers)


_X_TO_TWO_TO = _powers()


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """``zlib.crc32(a + b)`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and
    ``len(b)``."""
    shift, n, k = 1 << 31, length2, 3  # x**(8 * length2)
    while n:
        if n & 1:
            shift = _multiply(_X_TO_TWO_TO[k & 31], shift)
        n >>= 1
        k += 1
    return _multiply(shift, crc1) ^ crc2


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A body produced piece by piece as it is sent (so iterated once), its length known
    beforehand."""

    length: int
    pieces: Iterable[bytes]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)


def _split(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if len(chunk) <= PIECE_BYTES:
            yield chunk
        else:
            view = memoryview(chunk)
            for start in range(0, len(chunk), PIECE_BYTES):
                yield bytes(view[start : start + PIECE_BYTES])


@dataclass(frozen=True, slots=True)
class GzipAssembly:
    """Segments in order, with the CRC-32 and length of their text together: the front of a
    ``/metrics`` body, kept compressed only. Each scrape appends its tail (``gzip_body``:
    one gzip member; ``text_body``: the text, inflated on the fly)."""

    segments: tuple[Segment, ...]
    crc: int
    length: int

    @classmethod
    def of(cls, segments: Iterable[Segment]) -> GzipAssembly:
        kept = tuple(s for s in segments if s.length)
        crc = length = 0
        for segment in kept:
            crc = crc32_combine(crc, segment.crc, segment.length)
            length += segment.length
        return cls(kept, crc, length)

    def gzip_body(self, tail: bytes, level: int = GZIP_LEVEL) -> StreamedBody:
        """One gzip member: header, the segments, ``tail`` ending the deflate stream, the
        trailer (CRC-32 and length modulo 2**32 of the whole text)."""
        compressor = zlib.compressobj(level, zlib.DEFLATED, _RAW_WBITS)
        end = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        crc, length = zlib.crc32(tail, self.crc), (self.length + len(tail)) & 0xFFFFFFFF
        chunks = [
            _GZIP_HEADER,
            *(s.data for s in self.segments),
            end + struct.pack("<II", crc, length),
        ]
        return StreamedBody(sum(map(len, chunks)), _split(chunks))

    def text_body(self, tail: bytes) -> StreamedBody:
        """The text of the segments then ``tail``, inflated piece by piece as it is read."""
        return StreamedBody(self.length + len(tail), self._text(tail))

    def _text(self, tail: bytes) -> Iterator[bytes]:
        for segment in self.segments:
            yield from segment.inflated()
        if tail:
            yield tail


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
            samples = published.samples if published is not None else Samples()
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

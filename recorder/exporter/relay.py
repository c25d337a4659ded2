"""``/metrics`` across the two processes of the service.

The worker process polls; the server process answers HTTP. Once a poll's samples are stored (or
wait for the database), the worker renders the new snapshot's data gauges' sample lines
(``LineRenderer``, the same fast renderer as ``RecorderRegistry``), compressed as it renders, on
a thread of its own (``LinePublisher``: never on the poll's path, and only the newest snapshot
when several came during one render), and sends them over with its own self-metrics
(``own_exposition``). The server's ``RelayRegistry`` keeps the latest of each kind, withdraws a
kind whose lines are older than ``withdraw_after_intervals`` poll intervals (as
``SnapshotHolder`` does in one process) and serves the body, with its own metrics (HTTP,
process, worker) at the end.

**The lines travel and stay compressed.** At 150,000 pods they are 60.6 MB of text. Each
family's lines are one raw deflate ``Segment`` (zlib level 1, ended by a sync flush, with the
text's CRC-32 and length): 6.0 MB. They cross the pipe with ``send_bytes``/``recv_bytes``
behind a small pickled ``LinesFollow`` (one copy each side, no pickle of the payload), and
the server keeps only them. A gzip scrape is one gzip member assembled around them
(``GzipAssembly``: header, the families' ``# HELP``/``# TYPE`` segments, the worker's
segments, the self-metrics tail compressed with ``Z_FINISH``, the trailer); a client that
does not accept gzip gets the text inflated piece by piece as it is sent.

Measured at 150,000 pods (5,000 nodes, 300k containers of ``ClusterModel``; a worker
process renders a second snapshot and sends it over a ``Pipe`` to
a server process that publishes it and scrapes both formats, gzipped and not; RSS from
``/proc/self/status``, peaks by ``VmHWM`` after ``clear_refs``; CPU seconds, 2 cores):

=================================  ===================  ==================
                                   pickled text before  segments now
=================================  ===================  ==================
worker: peak RSS of render + send  +162 MiB             +14 MiB
worker: CPU of render + send       0.58 s (pickle)      0.48 s (deflate)
server: RSS kept after scrapes     +81 MiB              +10 MiB
server: peak RSS                   +116 MiB             +14 MiB
server: CPU to receive             0.16 s               0.01 s
server: CPU, first gzip scrape     0.18-0.20 s/format   0.003 s
server: CPU, plain scrape          0 (text kept)        0.06 s (inflate)
=================================  ===================  ==================

So compressing moved from the server (once per format, next to ``/livez``) to the worker
(once per poll, outside the GIL, off the poll's thread), and cost less than the pickle it
replaced. Level 1 against 6 on these lines: 6.0 MB in 0.17 s against 5.3 MB in 0.52 s, so
level 1 (``GZIP_LEVEL``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from recorder import gcpause
from recorder.domain import Kind, Resource, Sample
from recorder.exporter.filters import ExportFilter, exposed_families
from recorder.exporter.holder import WITHDRAW_AFTER_INTERVALS, SnapshotHolder
from recorder.exporter.registry import (
    GZIP_LEVEL,
    Deflater,
    GzipAssembly,
    Segment,
    StreamedBody,
    deflate,
    generic_exposition,
)
from recorder.exporter.render import SampleLines, headers

log = logging.getLogger("recorder.relay")

_EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class KindLines:
    """The sample lines of one kind's two data families, from one snapshot, compressed."""

    kind: Kind
    cpu: Segment
    memory: Segment


@dataclass(frozen=True, slots=True)
class LinesFollow:
    """On the pipe: the ``KindLines`` of ``kind``, whose two segments' data follow as two
    ``send_bytes`` messages (CPU, then memory)."""

    kind: Kind
    cpu: tuple[int, int]
    """CRC-32 and length of the CPU lines' text."""
    memory: tuple[int, int]


def send_lines(conn: Connection, lines: KindLines) -> None:
    """``lines`` on ``conn``: no other message may be sent on it in between (hold a lock)."""
    cpu, memory = lines.cpu, lines.memory
    conn.send(LinesFollow(lines.kind, (cpu.crc, cpu.length), (memory.crc, memory.length)))
    conn.send_bytes(cpu.data)
    conn.send_bytes(memory.data)


def receive(conn: Connection) -> object:
    """The next message on ``conn``: ``KindLines`` for what ``send_lines`` sent, anything
    else as it was sent."""
    message = conn.recv()
    if isinstance(message, LinesFollow):
        cpu = Segment(conn.recv_bytes(), *message.cpu)
        memory = Segment(conn.recv_bytes(), *message.memory)
        return KindLines(message.kind, cpu, memory)
    return message


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
    """Worker side: a snapshot's samples to ``KindLines`` (label texts cached across polls),
    compressed slice by slice as they are rendered."""

    def __init__(self, export_filter: ExportFilter | None = None, level: int = GZIP_LEVEL) -> None:
        self._filter = export_filter or ExportFilter()
        self._families = exposed_families(self._filter)
        self._lines = SampleLines(self._filter)
        self._level = level

    def render(self, kind: Kind, samples: Iterable[Sample]) -> KindLines | None:
        """``None`` when no family of ``kind`` is exposed (per-container gauges off)."""
        names = {f.resource: f.name for f in self._families if f.kind is kind}
        if not names:
            return None
        cpu, memory = Deflater(self._level), Deflater(self._level)
        for cpu_lines, memory_lines in self._lines.slices(
            kind, names[Resource.CPU], names[Resource.MEMORY], samples
        ):
            cpu.write(cpu_lines)
            memory.write(memory_lines)
        return KindLines(kind, cpu.segment(), memory.segment())


class LinePublisher:
    """Worker side, on a thread of its own: renders the newest snapshot of each kind the
    poller announced (``announce``, its ``on_publish``) and hands it to ``send``.

    A render begins once the poll's batches are written (``around``: the worker's waits a third
    of an interval at most, then takes a turn as a write does), so the gauges follow the
    database by the write's time. Announcements that come while a render runs collapse:
    the next render reads the holder then, so it renders only the newest snapshot, and a
    snapshot already sent is not sent again. A snapshot sent is released from the holder
    (nothing else in the worker reads its samples)."""

    def __init__(
        self,
        holder: SnapshotHolder,
        renderer: LineRenderer,
        send: Callable[[KindLines], None],
        observe: Callable[[float], None] = lambda seconds: None,
        around: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """``observe`` hears the seconds of each render (``recorder_render_duration``).
        ``around`` is entered before the snapshot is read and left after its render: the
        worker's waits for the poll's write and takes a turn (``Flusher.after_writes``)."""
        self._around = around
        self._holder = holder
        self._renderer = renderer
        self._send = send
        self._observe = observe
        self._changed = threading.Condition()
        self._pending: set[Kind] = set()
        self._closed = False
        self._sent: dict[Kind, int] = {}
        self._thread: threading.Thread | None = None

    def announce(self, kind: Kind) -> None:
        with self._changed:
            self._pending.add(kind)
            self._changed.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="relay", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop after the render in progress (waiting at most ``timeout`` for it)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                kinds = sorted(self._pending, key=lambda k: k.value)
                self._pending.clear()
            for kind in kinds:
                try:
                    self._publish(kind)
                except Exception:  # a render that fails must not stop the next ones
                    log.exception("rendering the %s gauges failed", kind.value)

    def _publish(self, kind: Kind) -> None:
        with self._around():
            self._render(kind)

    def _render(self, kind: Kind) -> None:
        view = self._holder.view()
        published = view.nodes if kind is Kind.NODE else view.containers
        if published is None or self._sent.get(kind) == published.generation:
            return
        begun = time.perf_counter()
        with gcpause.paused():  # 400,000 lines' strings, none in a cycle
            lines = self._renderer.render(kind, published.samples)
        self._observe(time.perf_counter() - begun)
        self._sent[kind] = published.generation
        if lines is not None:
            self._send(lines)
        self._holder.release(kind, published.generation)


@dataclass(slots=True)
class _Received:
    lines: KindLines
    at: float
    generation: int


class RelayRegistry:
    """Server side: the latest lines of each kind (compressed, as they came) and the worker's
    self-metrics, served with this process's own registry (``own``) at the end."""

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
        self._headers = {
            openmetrics: [
                deflate([headers(f, openmetrics=openmetrics).encode()], gzip_level)
                for f in self._families
            ]
            for openmetrics in (False, True)
        }
        self.own = CollectorRegistry(auto_describe=True)
        if process_collectors:
            ProcessCollector(registry=self.own)
            PlatformCollector(registry=self.own)
            GCCollector(registry=self.own)
        self._lock = threading.Lock()
        self._latest: dict[Kind, _Received] = {}
        self._generation = 0
        self._worker = OwnExposition(b"", b"")
        self._bodies: dict[bool, GzipAssembly] = {}
        self._bodies_key: tuple[tuple[str, int], ...] = ()

    def publish(self, lines: KindLines) -> None:
        with self._lock:
            self._generation += 1
            self._latest[lines.kind] = _Received(lines, self._clock(), self._generation)

    def withdraw(self) -> None:
        """Forget every kind's lines (a follower replica exposes no usage gauges)."""
        with self._lock:
            if self._latest:
                self._generation += 1
                self._latest.clear()

    def set_worker_metrics(self, exposition: OwnExposition) -> None:
        with self._lock:
            self._worker = exposition

    def fresh(self) -> bool:
        """Whether any kind's data is younger than the withdrawal window."""
        now = self._clock()
        with self._lock:
            return any(now - r.at < self._stale_after for r in self._latest.values())

    def exposition(self, *, openmetrics: bool, gzip: bool) -> StreamedBody:
        """The whole ``/metrics`` body, produced as it is sent (one gzip member when
        ``gzip``)."""
        body = self._data_body(openmetrics)
        with self._lock:
            worker = self._worker
        own = generic_exposition(self.own, openmetrics=openmetrics)
        tail = (worker.openmetrics if openmetrics else worker.text) + own
        return body.gzip_body(tail, self._gzip_level) if gzip else body.text_body(tail)

    def _data_body(self, openmetrics: bool) -> GzipAssembly:
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
                segments: list[Segment] = []
                for family, family_headers in zip(
                    self._families, self._headers[openmetrics], strict=True
                ):
                    segments.append(family_headers)
                    received = current.get(family.kind)
                    if received is not None:
                        lines = received.lines
                        segments.append(
                            lines.cpu if family.resource is Resource.CPU else lines.memory
                        )
                body = self._bodies[openmetrics] = GzipAssembly.of(segments)
            return body

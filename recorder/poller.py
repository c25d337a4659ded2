"""One poll of the Metrics API: fetch → decode → normalize → store → publish → self-metrics.

``Poller.poll_once()`` never raises for a failed poll: it returns a ``PollReport`` saying what
was stored, skipped, rejected and what failed, and counts it all in the self-metrics. When the
database is down, the normalized batches are kept in a bounded in-memory buffer and written
first by the next poll, so an outage loses only what the buffer cannot hold.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recorder.domain import Batch, Kind, Rejection, WriteResult
from recorder.errors import (
    CredentialsError,
    DecodeError,
    MetricsApiError,
    RecorderError,
    StoreError,
)
from recorder.exporter import SelfMetrics, SnapshotHolder
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import normalize_nodes, normalize_pods

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED_SAMPLES = 2_000_000
_RESOURCE = {Kind.NODE: "nodes", Kind.CONTAINER: "pods"}


class MetricsSource(Protocol):
    """What the poller needs of a Metrics API client (``kube.client.MetricsClient``)."""

    def list_nodes(self) -> bytes: ...

    def list_pods(self, namespace: str | None = None) -> bytes: ...


class BatchSink(Protocol):
    """What the poller needs of a store (``store.Store``)."""

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult: ...


@dataclass
class ResourceOutcome:
    resource: str
    samples: int = 0
    written: int = 0
    skipped: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    error: RecorderError | None = None
    stored: bool = False


@dataclass
class PollReport:
    started_ms: int
    duration_seconds: float = 0.0
    outcomes: list[ResourceOutcome] = field(default_factory=list)
    flushed_from_buffer: int = 0
    buffered: int = 0

    @property
    def ok(self) -> bool:
        return all(o.error is None for o in self.outcomes)

    @property
    def written(self) -> int:
        return sum(o.written for o in self.outcomes)

    @property
    def rejected(self) -> int:
        return sum(len(o.rejections) for o in self.outcomes)


class Poller:
    def __init__(
        self,
        source: MetricsSource,
        sink: BatchSink,
        snapshot: SnapshotHolder,
        metrics: SelfMetrics,
        *,
        namespaces: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        max_buffered_samples: int = DEFAULT_MAX_BUFFERED_SAMPLES,
    ):
        self._source = source
        self._sink = sink
        self._snapshot = snapshot
        self._metrics = metrics
        self._namespaces = tuple(namespaces)
        self._clock = clock
        self._max_buffered = max_buffered_samples
        self._buffer: deque[Batch] = deque()
        self._buffered_samples = 0
        self.last_report: PollReport | None = None
        self.last_success_time: float | None = None

    @property
    def buffered_samples(self) -> int:
        return self._buffered_samples

    def poll_once(self) -> PollReport:
        started = self._clock()
        report = PollReport(started_ms=int(started * 1000))
        begun = time.perf_counter()
        report.flushed_from_buffer = self._flush_buffer()
        if not self._namespaces:
            report.outcomes.append(self._poll_kind(Kind.NODE))
        report.outcomes.append(self._poll_kind(Kind.CONTAINER))
        report.duration_seconds = time.perf_counter() - begun
        report.buffered = self._buffered_samples
        self._metrics.poll_duration.observe(report.duration_seconds)
        self._metrics.samples_buffered.set(self._buffered_samples)
        fetched_all = all(
            not isinstance(o.error, MetricsApiError | DecodeError | CredentialsError)
            for o in report.outcomes
        )
        self._metrics.api_up.set(1 if fetched_all else 0)
        if report.ok:
            self.last_success_time = self._clock()
            self._metrics.last_success.set(self.last_success_time)
        self.last_report = report
        return report

    def _poll_kind(self, kind: Kind) -> ResourceOutcome:
        resource = _RESOURCE[kind]
        outcome = ResourceOutcome(resource)
        self._metrics.polls.labels(resource=resource).inc()
        try:
            batch = self._fetch(kind)
        except RecorderError as exc:
            return self._failed(outcome, exc)
        outcome.samples = len(batch.samples)
        outcome.rejections = list(batch.rejections)
        for reason, count in Counter(r.reason for r in batch.rejections).items():
            self._metrics.samples_rejected.labels(reason=reason).inc(count)
        if batch.rejections:
            first = batch.rejections[0]
            log.warning(
                "rejected %d %s item(s), e.g. %s%s: %s (%s)",
                len(batch.rejections),
                resource,
                f"{first.namespace}/" if first.namespace else "",
                first.name,
                first.reason,
                first.detail,
            )
        self._snapshot.publish(kind, batch.samples, int(self._clock() * 1000))
        if self._buffer:
            # Keep time order per series: newer samples wait behind the buffered ones.
            self._hold(batch)
            return self._failed(
                outcome, StoreError("earlier samples are still waiting to be written")
            )
        try:
            result = self._write(batch)
        except StoreError as exc:
            self._hold(batch)
            return self._failed(outcome, exc)
        outcome.written, outcome.skipped, outcome.stored = (
            result.written,
            result.skipped_duplicates,
            True,
        )
        self._metrics.samples_written.inc(result.written)
        return outcome

    def _write(self, batch: Batch) -> WriteResult:
        begun = time.perf_counter()
        try:
            return self._sink.write(batch, now_ms=int(self._clock() * 1000))
        finally:
            self._metrics.store_write_duration.labels(resource=_RESOURCE[batch.kind]).observe(
                time.perf_counter() - begun
            )

    def _fetch(self, kind: Kind) -> Batch:
        if kind is Kind.NODE:
            nodes, bad = decode_node_list(self._source.list_nodes())
            batch = normalize_nodes(nodes)
        else:
            batches = []
            bad = []
            for namespace in self._namespaces or (None,):
                pods, broken = decode_pod_list(self._source.list_pods(namespace))
                bad.extend(broken)
                batches.append(normalize_pods(pods))
            batch = Batch(
                kind,
                tuple(s for b in batches for s in b.samples),
                {ref: labels for b in batches for ref, labels in b.pod_labels.items()},
                tuple(r for b in batches for r in b.rejections),
            )
        if bad:
            batch = Batch(kind, batch.samples, batch.pod_labels, (*bad, *batch.rejections))
        return batch

    def _failed(self, outcome: ResourceOutcome, exc: RecorderError) -> ResourceOutcome:
        reason = getattr(exc, "reason", None) or (
            "store" if isinstance(exc, StoreError) else "malformed"
        )
        self._metrics.poll_errors.labels(resource=outcome.resource, reason=reason).inc()
        log.error("polling %s failed (%s): %s", outcome.resource, reason, exc)
        outcome.error = exc
        return outcome

    def _hold(self, batch: Batch) -> None:
        self._buffer.append(batch)
        self._buffered_samples += len(batch.samples)
        while self._buffered_samples > self._max_buffered and len(self._buffer) > 1:
            dropped = self._buffer.popleft()
            self._buffered_samples -= len(dropped.samples)
            self._metrics.samples_dropped.inc(len(dropped.samples))
            log.error(
                "write buffer full (%d samples): dropped %d %s samples from the oldest poll",
                self._max_buffered,
                len(dropped.samples),
                _RESOURCE[dropped.kind],
            )

    def _flush_buffer(self) -> int:
        flushed = 0
        while self._buffer:
            batch = self._buffer[0]
            try:
                result = self._write(batch)
            except StoreError as exc:
                log.warning(
                    "database still unavailable, %d samples buffered: %s",
                    self._buffered_samples,
                    exc,
                )
                return flushed
            self._buffer.popleft()
            self._buffered_samples -= len(batch.samples)
            self._metrics.samples_written.inc(result.written)
            flushed += result.written
        return flushed

"""One poll of the Metrics API: fetch → decode → normalize → publish → queue for writing.

``Poller.poll_once()`` never raises for a failed poll: it returns a ``PollReport`` saying what
was fetched, rejected and what failed, and counts it all in the self-metrics. A bad item is
rejected alone; a bad response fails only its resource; anything unexpected in one resource
is counted (reason ``internal``, its traceback logged) and the other resource still runs.
Failures and rejections are counted here and said once, by whoever reports the poll: the
service's one log line per poll (``PollReport.log_line``) or ``recorder poll``'s report.

Writing is the ``Flusher``'s job. With ``write_inline`` (``recorder poll``, tests) the poll
writes its batches before returning and reports what was stored; in the service a writer
thread does it, so a slow database never delays fetching.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from recorder import gcpause, heap, timeutil
from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Rejection, Samples
from recorder.errors import (
    CredentialsError,
    DecodeError,
    InternalError,
    MetricsApiError,
    MetricsApiTimeout,
    RecorderError,
    StoreError,
)
from recorder.exporter import SelfMetrics, SnapshotHolder
from recorder.flusher import RESOURCE, Flusher
from recorder.kube.decode import PodItems, decode_node_list
from recorder.kube.normalize import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    Remembered,
    normalize_nodes,
    normalize_pods,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

INLINE_WRITE_SECONDS = 60.0
"""How long an inline poll (``recorder poll``) may spend writing."""


class MetricsSource(Protocol):
    """What the poller needs of a Metrics API client (``kube.client.MetricsClient``)."""

    def list_nodes(self) -> bytes: ...

    def read_pods(
        self, consume: Callable[[Iterator[bytes]], T], namespace: str | None = None
    ) -> T: ...


@dataclass
class ResourceOutcome:
    resource: str
    samples: int = 0
    written: int = 0
    skipped: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    error: RecorderError | None = None
    stored: bool = False
    seq: int | None = None
    """The write queue's number of this resource's batch, while it waits to be written."""
    waiting: bool = False
    """Its batch waits for the database (written later, from memory or the spool)."""

    def describe(self) -> str:
        """``pods 41 written, 0 already stored, 2 rejected (e.g. ...)``, or why not."""
        parts = []
        if self.stored:
            parts.append(f"{self.written} written, {self.skipped} already stored")
        elif self.waiting:
            parts.append(f"{self.samples} waiting for the database")
        if self.rejections:
            first = self.rejections[0]
            where = f"{first.namespace}/" if first.namespace else ""
            parts.append(
                f"{len(self.rejections)} rejected (e.g. {where}{first.name}: {first.reason}: "
                f"{first.detail})"
            )
        if self.error is not None:
            parts.append(f"FAILED ({self.error.reason}): {self.error}")
        return f"{self.resource} {', '.join(parts) or 'nothing to write'}"


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

    def log_line(self, elapsed_seconds: float) -> tuple[int, str]:
        """The service's one log line for this poll and its level: what each resource wrote,
        found already stored, rejected or failed with, and how long the poll took until its
        samples were stored (``elapsed_seconds``). ERROR when a resource failed, else INFO."""
        line = f"poll in {elapsed_seconds:.2f}s: " + "; ".join(o.describe() for o in self.outcomes)
        if self.flushed_from_buffer:
            line += f"; {self.flushed_from_buffer} samples held from earlier polls written"
        return (logging.INFO if self.ok else logging.ERROR), line


class Poller:
    def __init__(
        self,
        source: MetricsSource,
        flusher: Flusher,
        snapshot: SnapshotHolder,
        metrics: SelfMetrics,
        *,
        namespaces: Sequence[str] = (),
        cluster: str = DEFAULT_CLUSTER,
        clock: Callable[[], float] = time.time,
        max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
        write_inline: bool = True,
        on_publish: Callable[[Kind], None] = lambda kind: None,
        deadline_seconds: float | None = None,
        turns: heap.Turns | None = None,
    ):
        """``turns``: the lists are read and normalized in their turn with the writer's batches
        (``heap.Turns``; the worker, whose writer thread writes while polls go on)."""
        self._turns = turns
        self._source = source
        self._flusher = flusher
        self._snapshot = snapshot
        self._metrics = metrics
        self._namespaces = tuple(namespaces)
        self._cluster = cluster
        self._clock = clock
        self._max_future_skew_ms = max_future_skew_ms
        self._write_inline = write_inline
        self._on_publish = on_publish
        self._deadline_seconds = deadline_seconds
        self._deadline: float | None = None
        self._remembered: dict[tuple[Kind, str | None], Remembered] = {}
        """Per list (kind and namespace), what normalizing its previous response made."""
        self.last_success_time: float | None = None
        self.last_attempt_time: float | None = None

    @property
    def buffered_samples(self) -> int:
        return self._flusher.queue.pending_samples

    def poll_once(self) -> PollReport:
        with gcpause.paused():  # millions of short-lived objects, none in a cycle
            return self._poll_once()

    def _poll_once(self) -> PollReport:
        started = self._clock()
        self.last_attempt_time = started
        report = PollReport(started_ms=timeutil.now_ms(lambda: started))
        begun = time.perf_counter()
        if self._deadline_seconds is not None:
            self._deadline = time.monotonic() + self._deadline_seconds
        queued: dict[int, ResourceOutcome] = {}
        kinds = (Kind.CONTAINER,) if self._namespaces else (Kind.NODE, Kind.CONTAINER)
        with self._turns.poll() if self._turns is not None else nullcontext():
            for kind in kinds:
                outcome, seq = self._poll_kind(kind)
                report.outcomes.append(outcome)
                if seq is not None:
                    queued[seq] = outcome
        if self._write_inline:
            self._write_now(report, queued)
        report.duration_seconds = time.perf_counter() - begun
        report.buffered = self._flusher.queue.pending_samples
        if self._write_inline:  # else whoever sees its samples stored observes it (the worker)
            self._metrics.poll_duration.observe(report.duration_seconds)
        fetched_all = all(
            not isinstance(o.error, MetricsApiError | DecodeError | CredentialsError)
            for o in report.outcomes
        )
        self._metrics.api_up.set(1 if fetched_all else 0)
        self._metrics.component_healthy.labels(component="poll").set(1 if fetched_all else 0)
        if report.ok:
            self.last_success_time = self._clock()
            self._metrics.last_success.set(self.last_success_time)
        return report

    def _write_now(self, report: PollReport, queued: dict[int, ResourceOutcome]) -> None:
        written = self._flusher.flush(deadline=time.monotonic() + INLINE_WRITE_SECONDS)
        first = min(queued, default=None)
        for seq, result in written.by_seq.items():
            outcome = queued.get(seq)
            if outcome is not None:
                outcome.written, outcome.skipped = result.written, result.skipped_duplicates
                outcome.rejections.extend(result.rejected)
                outcome.stored = True
            elif first is None or seq < first:
                report.flushed_from_buffer += result.written
        for outcome in queued.values():
            if not outcome.stored and outcome.error is None:
                outcome.error = written.error or StoreError(
                    "earlier samples are still waiting to be written"
                )
                self._metrics.poll_errors.labels(resource=outcome.resource, reason="store").inc()

    def _poll_kind(self, kind: Kind) -> tuple[ResourceOutcome, int | None]:
        resource = RESOURCE[kind]
        outcome = ResourceOutcome(resource)
        self._metrics.polls.labels(resource=resource).inc()
        scopes: tuple[str | None, ...] = (
            (None,) if kind is Kind.NODE else (self._namespaces or (None,))
        )
        batches: list[Batch] = []
        for scope in scopes:
            # Each list is its own response: one that fails costs only itself.
            try:
                batches.append(self._fetch(kind, scope))
            except RecorderError as exc:
                self._failed(outcome, exc)
            except Exception as exc:  # a bug must cost one list of one poll, not the service
                log.exception("polling %s met an unexpected error", resource)
                self._failed(outcome, InternalError(f"unexpected error: {exc!r}"))
        if not batches:
            return outcome, None
        batch = batches[0] if len(batches) == 1 else _merged(kind, batches)
        outcome.samples = len(batch.samples)
        outcome.rejections = list(batch.rejections)
        self._count_rejections(batch.rejections)
        self._snapshot.publish(kind, batch.samples, timeutil.now_ms(self._clock))
        self._on_publish(kind)
        seq = self._flusher.queue.put(batch)
        outcome.seq = seq
        outcome.stored = seq is None  # nothing to write
        return outcome, seq

    def _count_rejections(self, rejections: Sequence[Rejection]) -> None:
        # Counted here; said once, by whoever reports the poll (its log line, `recorder poll`).
        for reason, count in Counter(r.reason for r in rejections).items():
            self._metrics.samples_rejected.labels(reason=reason).inc(count)

    def _check_deadline(self, what: str) -> None:
        """No new request starts once the poll's deadline has passed (each request has its
        own deadline too), so one poll never runs far into the next."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise MetricsApiTimeout(
                f"the poll ran past its deadline of {self._deadline_seconds:g}s before reading "
                f"{what}: the Metrics API answers slowly; the next poll reads it again"
            )

    def _fetch(self, kind: Kind, namespace: str | None) -> Batch:
        now_ms = timeutil.now_ms(self._clock)
        skew = self._max_future_skew_ms
        if kind is Kind.NODE:
            self._check_deadline("nodes")
            nodes, bad = decode_node_list(self._source.list_nodes())
            batch = normalize_nodes(
                nodes,
                now_ms=now_ms,
                max_future_skew_ms=skew,
                cluster=self._cluster,
                remembered=self._remembered.setdefault((kind, None), Remembered()),
            )
        else:
            self._check_deadline("pods" if namespace is None else f"pods in {namespace}")
            remembered = self._remembered.setdefault((kind, namespace), Remembered())

            def typed(pieces: Iterator[bytes]) -> tuple[Batch, list[Rejection]]:
                # Called again with a new body if this one breaks while it arrives.
                pods = PodItems(pieces)
                batch = normalize_pods(
                    pods,
                    now_ms=now_ms,
                    max_future_skew_ms=skew,
                    cluster=self._cluster,
                    remembered=remembered,
                )
                return batch, pods.rejections  # complete: normalizing went through every item

            batch, bad = self._source.read_pods(typed, namespace)
        if bad:
            batch = Batch(
                kind, batch.samples, batch.pod_labels, (*bad, *batch.rejections), batch.cluster
            )
        return batch

    def _failed(self, outcome: ResourceOutcome, exc: RecorderError) -> ResourceOutcome:
        # Counted here; said once, by whoever reports the poll (its log line, `recorder poll`).
        self._metrics.poll_errors.labels(resource=outcome.resource, reason=exc.reason).inc()
        if outcome.error is None:
            outcome.error = exc
        return outcome


def _merged(kind: Kind, batches: Sequence[Batch]) -> Batch:
    return Batch(
        kind,
        Samples.joined(b.samples for b in batches),
        {ref: labels for b in batches for ref, labels in b.pod_labels.items()},
        tuple(r for b in batches for r in b.rejections),
        batches[0].cluster,  # one poller, one cluster
    )

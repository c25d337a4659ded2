"""Writing queued batches to the database, apart from fetching them.

``Flusher.flush()`` writes the waiting batches oldest first until the queue is empty, a
deadline passes, or the database fails for a transient reason (then everything waiting is
parked in the spool and the next round tries again). A write cannot be stopped once begun, so
with a deadline (a shutdown's) a batch is not begun when the recent writes say it would end
past it (``Flusher.expected_seconds``): it waits, and a shutdown spools it. Rows the database
refuses for their content come back from the store as rejections and are counted; they never
block the queue.

In the service a thread runs ``Flusher.run()``: a slow, locked or frozen database delays
writing, never fetching; the queue absorbs the wait.

With ``take_handed_over`` (the worker on PostgreSQL), each round first writes the batches a
deposed leader handed over (``recorder.store.handover``), a few at most, counted as written
(or as dropped, ``unreadable``, when one cannot be decoded); a replica that does not lead is
refused by the fence before any query, and nothing is said. ``hand_over`` is the other
side: a deposed leader's queue, handed over to the new leader through the database.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from recorder import gcpause, heap
from recorder.buffer import RESTORED_PART_SAMPLES, WriteQueue
from recorder.domain import Batch, Kind, Rejection, WriteResult
from recorder.errors import RecorderError, StoreError
from recorder.exporter import SelfMetrics
from recorder.store.handover import Outbox, Taken
from recorder.store.leader import NotLeader
from recorder.timeutil import now_ms

log = logging.getLogger(__name__)

RESOURCE = {Kind.NODE: "nodes", Kind.CONTAINER: "pods"}
MIN_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 15.0
MAX_HANDED_OVER_PER_ROUND = 8
"""Handed-over batches one write round takes at most (the rest wait for the next rounds)."""
HANDOVER_CHECK_SECONDS = 5.0
"""How often an idle writer (nothing polled) looks for handed-over batches."""
RATE_WRITES = 8
"""Recent writes whose seconds per sample predict how long the next one takes."""
MIN_RATE_WRITES = 3
"""Fewer recent writes predict nothing (a batch is begun whatever the deadline)."""
RATE_MARGIN = 2.0
"""The prediction is the recent writes' median seconds per sample times this: a pods batch
writes slower per sample than a nodes batch, and a loaded machine slower than the median."""


class BatchSink(Protocol):
    """What writing needs of a store (``store.Store``)."""

    def write(self, batch: Batch, *, now_ms: int) -> WriteResult: ...

    def prepare(self) -> None:
        """Be ready to write: read what writing needs from the database, if not held yet.
        Raises ``StoreError`` when the database cannot be read now."""

    def ready(self) -> None:
        """Ask the database cheaply whether ``prepare`` could read now, if it would read:
        called outside the write turn. Raises ``StoreError`` when it cannot."""


@dataclass
class FlushReport:
    """What one ``flush()`` wrote, by batch sequence number."""

    by_seq: dict[int, WriteResult] = field(default_factory=dict)
    error: StoreError | None = None
    remaining_samples: int = 0
    deferred_samples: int = 0
    """Samples of the batch not begun because it would have ended past the deadline."""

    @property
    def written(self) -> int:
        return sum(r.written for r in self.by_seq.values())


@dataclass(frozen=True, slots=True)
class WriteHealth:
    """The writer's state, for ``/readyz`` details and the self-metrics."""

    ok: bool
    last_success: float | None
    failing_since: float | None
    last_error: str | None
    pending_samples: int
    memory_bytes: int
    spool_bytes: int


class Flusher:
    def __init__(
        self,
        queue: WriteQueue,
        sink: BatchSink,
        metrics: SelfMetrics,
        *,
        clock: Callable[[], float] = time.time,
        quiet: bool = False,
        take_handed_over: Callable[[int], Taken | None] | None = None,
        turns: heap.Turns | None = None,
    ):
        """``quiet``: write failures and refused rows are not logged, because the caller
        reports them itself (``recorder poll`` prints them with the rest of its report).
        ``take_handed_over(now_ms)``: write one handed-over batch (``Store.take_handed_over``
        for this recorder's cluster), None when none waits. ``turns``: each batch is read
        and written in its turn with the polls (``heap.Turns``; the worker's writer thread)."""
        self._turns = turns
        self.queue = queue
        self.take_handed_over = take_handed_over
        self._handover_checked = 0.0
        self._sink = sink
        self._metrics = metrics
        self._clock = clock
        self._quiet = quiet
        self._lock = threading.Lock()
        self._last_success: float | None = None
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._rates: deque[float] = deque(maxlen=RATE_WRITES)
        """Seconds per sample of the recent writes (``_write``)."""
        self._reload_seconds = 0.0
        """How long the last read of the writer's maps after a failure took (``prepare``)."""

    def expected_seconds(self, samples: int, *, reload: bool) -> float | None:
        """How long writing ``samples`` is expected to take (``reload``: after reading the
        writer's maps again, as after a failure), from the recent writes; None when too few
        were seen to say."""
        if len(self._rates) < MIN_RATE_WRITES:
            return None
        seconds = statistics.median(self._rates) * RATE_MARGIN * samples
        return seconds + (self._reload_seconds if reload else 0.0)

    def health(self) -> WriteHealth:
        memory, spool = self.queue.parked_bytes
        with self._lock:
            return WriteHealth(
                ok=self._failing_since is None,
                last_success=self._last_success,
                failing_since=self._failing_since,
                last_error=self._last_error,
                pending_samples=self.queue.pending_samples,
                memory_bytes=memory,
                spool_bytes=spool,
            )

    def flush(
        self, deadline: float | None = None, stop: threading.Event | None = None
    ) -> FlushReport:
        """Write waiting batches until none is left, ``deadline`` (``time.monotonic()``)
        passes, ``stop`` is set, or a transient failure; never raises for a database
        failure."""
        report = FlushReport()
        self._write_handed_over(deadline)
        while deadline is None or time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                break
            samples = self.queue.oldest_samples()
            if samples is None:
                break
            parked = self.queue.parked_oldest()
            if deadline is not None and not self._ends_in_time(samples, parked, deadline):
                report.deferred_samples = samples
                break
            if parked is not None:
                # Reading a parked batch back costs a copy of its samples (200,000 at 150,000
                # pods): during an outage every retry would make one only to fail. The store is
                # asked first, which fails cheaply while the database is still down. In its
                # turn, as a write: when the database answers reads but refuses writes (a
                # lock), this reads every series and pod's labels anew (seconds of short-lived
                # objects at 150,000 pods), which a poll's own peak should not meet; and only
                # once the database answers those reads (``ready``, outside the turn): a reload
                # waiting out a held lock in its turn let the poll go on after a third of an
                # interval, and both read at once when the lock went.
                reloading = self._is_failing()
                begun = time.monotonic()
                try:
                    self._sink.ready()  # a lock waited out here holds no turn a poll wants
                    with self._turn():
                        self._sink.prepare()
                except StoreError as exc:
                    self._failed(parked, exc)
                    report.error = exc
                    break
                if reloading:
                    self._reload_seconds = time.monotonic() - begun
            pending = self.queue.oldest()
            if pending is None:
                break
            seq, kind = pending.seq, pending.kind
            result, error = self._write_parts(pending.parts(RESTORED_PART_SAMPLES))
            del pending
            if error is not None:
                # Parts stored before the one that failed are skipped as duplicates next time:
                # counted as written now.
                self._metrics.samples_written.inc(result.written)
                self._failed(kind, error)
                report.error = error
                break
            self.queue.done(seq)
            self._succeeded(kind, result)
            report.by_seq[seq] = result
        if report.by_seq or report.error is not None:
            heap.trim()  # what the round's batches and rows took, back to the system
        report.remaining_samples = self.queue.pending_samples
        self._metrics.samples_buffered.set(report.remaining_samples)
        memory, spool = self.queue.parked_bytes
        self._metrics.buffer_bytes.labels(place="memory").set(memory)
        self._metrics.buffer_bytes.labels(place="spool").set(spool)
        return report

    def run(
        self,
        stop: threading.Event,
        on_flush: Callable[[FlushReport], None] = lambda report: None,
    ) -> None:
        """Write whatever arrives until ``stop`` is set; back off while the database fails.
        ``on_flush`` hears what each round wrote (the worker's per-poll log line)."""
        backoff = MIN_BACKOFF_SECONDS
        while not stop.is_set():
            if not self.queue.wait(timeout=0.5):
                if (
                    self.take_handed_over is not None
                    and time.monotonic() - self._handover_checked >= HANDOVER_CHECK_SECONDS
                ):
                    self._write_handed_over(None)
                continue
            if stop.is_set():
                break
            report = self.flush(stop=stop)
            on_flush(report)
            if report.error is None:
                backoff = MIN_BACKOFF_SECONDS
                continue
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    # --- internals ----------------------------------------------------------------------

    def _is_failing(self) -> bool:
        with self._lock:
            return self._failing_since is not None

    def _ends_in_time(self, samples: int, parked: Kind | None, deadline: float) -> bool:
        """Whether writing the oldest batch (``samples``; ``parked``: read back first) is
        expected to end by ``deadline``; said in the log when it is not. At 150,000 pods on
        a slow machine a shutdown began a 200,000-sample write 2.5 s before its deadline
        that took 3.9 s (and after a database outage, the maps' reload before it took 16 s):
        past the grace period the server kills the worker, and what waits in memory is lost.
        """
        expected = self.expected_seconds(samples, reload=parked is not None and self._is_failing())
        left = deadline - time.monotonic()
        if expected is None or expected <= left:
            return True
        log.info(
            "not beginning to write %d samples: that would take about %.1fs and %.1fs are "
            "left; they wait",
            samples,
            expected,
            max(0.0, left),
        )
        return False

    def _write_handed_over(self, deadline: float | None) -> None:
        """Write up to ``MAX_HANDED_OVER_PER_ROUND`` handed-over batches, unless writes are
        failing; a database failure ends the round quietly (the queue's own write says it)."""
        take = self.take_handed_over
        if take is None or self._is_failing():
            return  # (while writes fail, a round's one attempt is the queue's)
        self._handover_checked = time.monotonic()
        for _ in range(MAX_HANDED_OVER_PER_ROUND):
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                with self._turn(), gcpause.paused():
                    taken = take(now_ms(self._clock))
            except NotLeader:
                return  # a follower: the leader writes them
            except StoreError as exc:
                log.debug("handed-over batches wait: %s", exc)
                return
            if taken is None:
                return
            self._handed_over(taken)

    def _handed_over(self, taken: Taken) -> None:
        if taken.error is not None or taken.result is None:
            log.error(
                "dropped a batch of %d %s samples handed over by replica %s that cannot be "
                "read (%s): deleted, counted in recorder_samples_dropped_total"
                '{reason="unreadable"}',
                taken.samples,
                taken.kind,
                taken.replica,
                taken.error,
            )
            self._metrics.samples_dropped.labels(reason="unreadable").inc(taken.samples)
            return
        result = taken.result
        self._metrics.samples_written.inc(result.written)
        rejected = result.rejected
        for reason, count in Counter(r.reason for r in rejected).items():
            self._metrics.samples_rejected.labels(reason=reason).inc(count)
        log.info(
            "wrote %d %s samples handed over by replica %s (handed over %.0fs ago; %d "
            "stored already, %d refused)",
            result.written,
            taken.kind,
            taken.replica,
            max(0.0, self._clock() - taken.created_ms / 1000),
            result.skipped_duplicates,
            len(rejected),
        )

    def _write_parts(self, parts: Iterator[Batch]) -> tuple[WriteResult, StoreError | None]:
        """Write a batch part by part (one part unless read back packed), each made and
        written in its turn; what the parts wrote together, and the error that stopped them.
        A batch stopped halfway stays queued whole: its parts already written are exact
        duplicates when it is written again, and skipped as such."""
        written = skipped = 0
        rejected: list[Rejection] = []
        while True:
            with self._turn():
                part = next(parts, None)
                if part is None:
                    break
                try:
                    result = self._write(part)
                except StoreError as exc:
                    return WriteResult(written, skipped, tuple(rejected)), exc
                finally:
                    del part  # its samples go before the turn does
            written += result.written
            skipped += result.skipped_duplicates
            rejected.extend(result.rejected)
        return WriteResult(written, skipped, tuple(rejected)), None

    def _write(self, batch: Batch) -> WriteResult:
        begun = time.perf_counter()
        try:
            with gcpause.paused():  # a batch's rows and maps: many objects, no cycle
                result = self._sink.write(batch, now_ms=now_ms(self._clock))
        finally:
            seconds = time.perf_counter() - begun
            self._metrics.store_write_duration.labels(resource=RESOURCE[batch.kind]).observe(
                seconds
            )
        if batch.samples:
            self._rates.append(seconds / len(batch.samples))
        return result

    @contextmanager
    def after_writes(self, max_wait_seconds: float) -> Iterator[None]:
        """Around a render of the gauges (``LinePublisher``): first the polls' batches waiting
        as objects are written (or parked, the database failing), then a write turn is held,
        each wait at most ``max_wait_seconds``. A render is as heavy as a write (at 150,000
        pods 0.6 s of CPU and 400,000 lines); run beside the write of the poll it renders, it
        competed with it for the interpreter (py-spy over three polls: the write 412 samples
        beside it, 377 after it) and added its peak to the write's."""
        self.queue.wait_settled(max_wait_seconds)
        with self._turn():
            yield

    def _turn(self) -> AbstractContextManager[None]:
        return self._turns.write() if self._turns is not None else nullcontext()

    def _succeeded(self, kind: Kind, result: WriteResult) -> None:
        self.queue.resume()
        now = self._clock()
        with self._lock:
            if self._failing_since is not None:
                log.info(
                    "the database accepts writes again after %.0fs; %d samples still waiting",
                    now - self._failing_since,
                    self.queue.pending_samples,
                )
            self._last_success, self._failing_since, self._last_error = now, None, None
        self._metrics.samples_written.inc(result.written)
        self._metrics.last_write.set(now)
        self._metrics.component_healthy.labels(component="write").set(1)
        rejected = result.rejected
        if rejected:
            for reason, count in Counter(r.reason for r in rejected).items():
                self._metrics.samples_rejected.labels(reason=reason).inc(count)
        if rejected and not self._quiet:
            first = rejected[0]
            log.warning(
                "the database refused %d %s item(s) for their content, e.g. %s%s: %s",
                len(rejected),
                RESOURCE[kind],
                f"{first.namespace}/" if first.namespace else "",
                first.name,
                first.detail,
            )

    def _failed(self, kind: Kind, exc: StoreError) -> None:
        self.queue.park_all()
        now = self._clock()
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = now
            self._last_error = str(exc)
        self._metrics.write_errors.labels(resource=RESOURCE[kind]).inc()
        self._metrics.component_healthy.labels(component="write").set(0)
        pending = self.queue.pending_samples
        if self._quiet:
            return
        if first:
            log.error("writing to the database failed; %d samples wait: %s", pending, exc)
        else:
            log.warning("database still unavailable, %d samples wait: %s", pending, exc)


@dataclass(frozen=True, slots=True)
class HandoverReport:
    """What ``hand_over`` did: samples and batches handed over, samples dropped, and why
    the rest was not handed over (None: nothing was left)."""

    samples: int
    batches: int
    dropped: int
    failure: str | None


def hand_over(
    queue: WriteQueue,
    outbox: Outbox,
    metrics: SelfMetrics,
    *,
    reason: str,
    deadline_seconds: float,
) -> HandoverReport:
    """Hand every batch waiting in ``queue`` over to the leader through the database
    (``store.handover``), oldest first, each leaving the queue once its row is committed;
    what is not handed over within ``deadline_seconds`` (the database failed again, or is
    slow) is dropped and counted for ``reason``, and the log says so. The handover runs in a
    thread of its own: a frozen network must not hold the caller (the elector) past the
    deadline. A batch whose row commits after that is both handed over and counted dropped."""
    given_up = threading.Event()
    handed = [0, 0]  # samples, batches
    failure: list[str] = []

    def run() -> None:
        for seq, kind, samples, data in queue.encoded():
            if given_up.is_set():
                return
            try:
                outbox.put(kind.value, samples, data, created_ms=now_ms())
            except ValueError as exc:  # too large: this batch alone
                log.error("dropping %d samples not handed over: %s", samples, exc)
                queue.drop(seq, reason)
                continue
            except RecorderError as exc:
                failure.append(str(exc))
                return
            queue.done(seq)
            metrics.samples_handed_over.inc(samples)
            handed[0] += samples
            handed[1] += 1

    begun = time.monotonic()
    thread = threading.Thread(target=run, name="handover", daemon=True)
    thread.start()
    thread.join(deadline_seconds)
    if thread.is_alive():
        given_up.set()
        failure.append(f"not done within {deadline_seconds:g}s")
    samples, batches = handed
    if samples:
        log.warning(
            "handed %d samples (%d batches) fetched but not stored over to the new leader "
            "in %.2fs; it writes them",
            samples,
            batches,
            time.monotonic() - begun,
        )
    dropped = queue.drop_all(reason)
    why = "; ".join(failure) or None
    if dropped:
        log.error(
            "discarded %d samples fetched but not stored (%s): %s; counted in "
            'recorder_samples_dropped_total{reason="%s"}',
            dropped,
            "this replica was deposed" if reason == "deposed" else "spooled by an earlier run",
            f"handing them over failed ({why})" if why else "they could not be handed over",
            reason,
        )
    return HandoverReport(samples, batches, dropped, why)

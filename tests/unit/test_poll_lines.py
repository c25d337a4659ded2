"""The service's one log line per poll (``worker.PollLines`` over ``PollReport.log_line``):
said once its samples are stored, whichever of the poll and the writer thread finishes first,
at once when the database fails, and never lost or said twice."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from recorder.domain import Kind, Rejection, WriteResult
from recorder.errors import MetricsApiForbidden
from recorder.flusher import FlushReport
from recorder.poller import PollReport, ResourceOutcome
from recorder.store.compactor import CompactionReport
from recorder.store.retention import RetentionReport
from recorder.store.sql import MaintenanceReport
from recorder.worker import PollLines, maintenance_summary

LOGGER = "test.poll-lines"


def report(*seqs: int | None, samples: int = 5) -> PollReport:
    """A poll whose nodes and pods batches were queued as ``seqs`` (None: nothing to write)."""
    outcomes = [
        ResourceOutcome(resource, samples=samples, seq=seq, stored=seq is None)
        for resource, seq in zip(("nodes", "pods"), seqs, strict=False)
    ]
    return PollReport(started_ms=0, outcomes=outcomes)


def flush(results: dict[int, WriteResult], error: Exception | None = None) -> FlushReport:
    return FlushReport(by_seq=results, error=error)  # type: ignore[arg-type]


NOW = [0.0]
"""The clock the lines measure with (seconds); tests move it."""


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[PollLines, list[str]]]:
    caplog.set_level(logging.INFO, logger=LOGGER)
    said: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(f"{record.levelname} {record.getMessage()}")

    logger = logging.getLogger(LOGGER)
    capture = Capture()
    logger.addHandler(capture)
    NOW[0] = 0.0
    yield PollLines(logger, clock=lambda: NOW[0]), said
    logger.removeHandler(capture)


def test_a_poll_is_said_once_its_batches_are_written(lines: tuple[PollLines, list[str]]) -> None:
    poll_lines, said = lines
    poll_lines.polled(report(1, 2), started=0.0)
    assert said == []  # the writer has not stored them yet
    poll_lines.flushed(flush({1: WriteResult(3, 2)}))
    assert said == []
    NOW[0] = 1.0
    poll_lines.flushed(flush({2: WriteResult(0, 5)}))
    assert said == [
        "INFO poll in 1.00s: nodes 3 written, 2 already stored; pods 0 written, 5 already stored"
    ]


def test_writes_stored_before_the_poll_returned_are_its_own(
    lines: tuple[PollLines, list[str]],
) -> None:
    poll_lines, said = lines
    poll_lines.flushed(flush({7: WriteResult(5, 0), 8: WriteResult(4, 1)}))
    poll_lines.polled(report(7, 8), started=0.0)
    assert said == [
        "INFO poll in 0.00s: nodes 5 written, 0 already stored; pods 4 written, 1 already stored"
    ]


def test_a_failing_database_is_said_at_once_and_held_samples_later(
    lines: tuple[PollLines, list[str]],
) -> None:
    poll_lines, said = lines
    poll_lines.polled(report(1, 2), started=0.0)
    poll_lines.flushed(flush({}, error=RuntimeError("down")))
    assert said == [
        "INFO poll in 0.00s: nodes 5 waiting for the database; pods 5 waiting for the database"
    ]
    NOW[0] = 1.5
    poll_lines.polled(report(3, 4), started=1.0)  # still failing: no need to wait
    assert said[-1].startswith("INFO poll in 0.50s: nodes 5 waiting for the database;")
    poll_lines.flushed(flush({n: WriteResult(5, 0) for n in (1, 2, 3, 4)}))  # it is back
    poll_lines.polled(report(5, 6), started=2.0)
    NOW[0] = 3.0
    poll_lines.flushed(flush({5: WriteResult(1, 4), 6: WriteResult(0, 5)}))
    assert said[-1] == (
        "INFO poll in 1.00s: nodes 1 written, 4 already stored; pods 0 written, 5 already "
        "stored; 20 samples held from earlier polls written"
    )
    assert len(said) == 3


def test_a_write_that_never_returns_is_said_by_the_next_poll_and_at_shutdown(
    lines: tuple[PollLines, list[str]],
) -> None:
    poll_lines, said = lines
    poll_lines.polled(report(1, None), started=0.0)
    NOW[0] = 2.0
    poll_lines.polled(report(2, None), started=1.0)
    assert said == [
        "INFO poll in 2.00s: nodes 5 waiting for the database; pods 0 written, 0 already stored"
    ]
    NOW[0] = 3.0
    poll_lines.close()
    assert said[-1] == (
        "INFO poll in 2.00s: nodes 5 waiting for the database; pods 0 written, 0 already stored"
    )
    poll_lines.close()
    poll_lines.flushed(flush({1: WriteResult(5, 0), 2: WriteResult(5, 0)}))
    assert len(said) == 2  # each poll said once, whatever comes after


def test_failures_and_rejections_make_one_error_line() -> None:
    failed = PollReport(
        started_ms=0,
        outcomes=[
            ResourceOutcome("nodes", error=MetricsApiForbidden("list nodes is forbidden")),
            ResourceOutcome(
                "pods",
                samples=2,
                written=2,
                stored=True,
                rejections=[
                    Rejection(Kind.CONTAINER, "web", "null_timestamp", "no timestamp", "shop"),
                    Rejection(Kind.CONTAINER, "db", "null_timestamp", "no timestamp", "shop"),
                ],
            ),
        ],
    )
    level, line = failed.log_line(0.25)
    assert level == logging.ERROR
    assert line == (
        "poll in 0.25s: nodes FAILED (forbidden): list nodes is forbidden; pods 2 written, "
        "0 already stored, 2 rejected (e.g. shop/web: null_timestamp: no timestamp)"
    )


def test_maintenance_is_said_in_a_few_words() -> None:
    idle = MaintenanceReport(CompactionReport(), RetentionReport())
    assert maintenance_summary(idle) == "nothing to compact or expire"
    busy = MaintenanceReport(
        CompactionReport(blocks=2, series=40, samples=9600, duplicates_dropped=3, rollup_days=1),
        RetentionReport(payloads_dropped=12, series_deleted=1),
    )
    assert maintenance_summary(busy) == (
        "compacted 2 blocks (40 series, 9600 samples; dropped 3 duplicates and 0 expired "
        "samples); rolled up 1 day; expired 12 payloads, 1 series"
    )
    with_workloads = MaintenanceReport(
        CompactionReport(blocks=1, series=4, samples=96, workloads=3),
        RetentionReport(chunks_deleted=4, workload_stats_deleted=2),
    )
    assert maintenance_summary(with_workloads) == (
        "compacted 1 block (4 series, 96 samples; dropped 0 duplicates and 0 expired samples; "
        "3 workloads' statistics); expired 4 chunks, 2 workload statistics"
    )


def test_each_poll_is_observed_once_from_its_start_until_stored() -> None:
    # recorder_poll_duration_seconds in the service: fetch to stored, not fetch to queued.
    observed: list[float] = []
    clock = [0.0]
    poll_lines = PollLines(
        logging.getLogger(LOGGER), clock=lambda: clock[0], observe=observed.append
    )
    poll_lines.polled(report(1, 2), started=0.0)
    clock[0] = 0.5
    poll_lines.flushed(flush({1: WriteResult(3, 0)}))
    assert observed == []  # the pods wait for the writer still
    clock[0] = 2.0
    poll_lines.flushed(flush({2: WriteResult(5, 0)}))
    poll_lines.polled(report(None, None), started=1.5)  # nothing to write: said at once
    assert observed == [2.0, 0.5]

"""APScheduler 3.x wiring only: run ``poll_once`` every interval, never two at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


class PollScheduler:
    def __init__(self, poll: Callable[[], Any], interval_seconds: float):
        self._poll = poll
        self._interval_seconds = interval_seconds
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._run,
            "interval",
            seconds=interval_seconds,
            id="poll",
            max_instances=1,
            coalesce=True,
            # A poll that could not start on time is still worth running late, once.
            misfire_grace_time=max(1, int(interval_seconds)),
            next_run_time=datetime.now(UTC),
        )

    def add_job(self, func: Callable[[], Any], interval_seconds: float, job_id: str) -> None:
        self._scheduler.add_job(
            func, "interval", seconds=interval_seconds, id=job_id, max_instances=1, coalesce=True
        )

    def _run(self) -> None:
        try:
            self._poll()
        except Exception:  # a failed poll must never stop the schedule
            log.exception("poll crashed unexpectedly; the next one runs as scheduled")

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, also wait for running jobs to finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

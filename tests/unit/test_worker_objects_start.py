"""When the worker starts reading the cluster objects (``objects_may_start``): not while
batches that waited are written (a restart with a spooled backlog, the end of an outage), at
150,000 pods that stacked the first lists' memory on the backlog's."""

from __future__ import annotations

import pytest

from recorder.worker import objects_may_start

DUE, LATEST = 30.0, 150.0


@pytest.mark.parametrize(
    ("now", "waiting", "when_due", "starts"),
    [
        (5.0, 0, False, True),  # a poll is done and nothing waits: at once
        (5.0, 200_000, False, False),  # a poll is done but a backlog waits: not yet
        (5.0, 0, True, False),  # the clock, before it is due
        (DUE, 0, True, True),  # the clock, due, nothing waits (polls that never succeed)
        (DUE + 60, 200_000, True, False),  # due, but the backlog is still being written
        (DUE + 60, 200_000, False, False),
        (LATEST, 600_000, True, True),  # at the latest, whatever waits (a database down)
        (LATEST, 600_000, False, True),
    ],
)
def test_the_reader_starts_once_nothing_waits_or_at_the_latest(
    now: float, waiting: int, when_due: bool, starts: bool
) -> None:
    assert objects_may_start(now, DUE, LATEST, waiting, when_due=when_due) is starts

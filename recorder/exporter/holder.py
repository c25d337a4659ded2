"""``SnapshotHolder``: the latest samples of each kind, published by the poller, read by
``/metrics``; data older than ``withdraw_after_intervals`` poll intervals is withdrawn."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from recorder.domain import Kind, Sample, Samples

WITHDRAW_AFTER_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class Published:
    """The samples of one kind from one successful read of the Metrics API (none once
    released: ``SnapshotHolder.release``)."""

    samples: Samples
    taken_at_ms: int
    generation: int
    """Counts publications of any kind: equal generations mean identical samples."""
    published_at: float
    """On the holder's clock."""


@dataclass(frozen=True, slots=True)
class SnapshotView:
    """What ``/metrics`` exposes now: ``None`` for a kind never read or withdrawn."""

    nodes: Published | None
    containers: Published | None
    fresh: bool
    """Whether any kind was read within the withdrawal window."""


class SnapshotHolder:
    """The latest samples of each kind, swapped atomically by the poller.

    With ``interval_seconds`` set, a kind whose last successful read is
    ``withdraw_after_intervals`` intervals old (the third failed poll in a row, at the default)
    is withdrawn rather than frozen: its gauges vanish, so Prometheus marks them stale instead
    of repeating old numbers. ``clock`` is monotonic seconds (a fake one in tests).
    """

    def __init__(
        self,
        interval_seconds: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        withdraw_after_intervals: int = WITHDRAW_AFTER_INTERVALS,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._stale_after = (
            None if interval_seconds is None else interval_seconds * withdraw_after_intervals
        )
        self._latest: dict[Kind, Published] = {}
        self._generation = 0

    def publish(self, kind: Kind, samples: Iterable[Sample], taken_at_ms: int) -> None:
        frozen = Samples.of(samples)  # a poll's own ``Samples`` is kept as it is (not copied)
        now = self._clock()
        with self._lock:
            self._generation += 1
            self._latest[kind] = Published(frozen, taken_at_ms, self._generation, now)

    def release(self, kind: Kind, generation: int) -> None:
        """Let go of the samples of ``kind`` published as ``generation`` (if still the newest),
        keeping when they were published: the worker's line publisher, once it has sent them
        to the server, is the last reader of a poll's samples in that process. At 150,000
        pods they are about 20 MB (five columns of 200,000 entries and 400,000 integers), which
        were held until the next poll had made its own: both at once at every poll's peak."""
        with self._lock:
            published = self._latest.get(kind)
            if published is not None and published.generation == generation:
                self._latest[kind] = Published(
                    Samples(), published.taken_at_ms, generation, published.published_at
                )

    def view(self) -> SnapshotView:
        now = self._clock()
        with self._lock:
            nodes = self._current(Kind.NODE, now)
            containers = self._current(Kind.CONTAINER, now)
            fresh = self._stale_after is None or nodes is not None or containers is not None
        return SnapshotView(nodes, containers, fresh)

    def _current(self, kind: Kind, now: float) -> Published | None:
        published = self._latest.get(kind)
        if published is None or self._stale_after is None:
            return published
        return published if now - published.published_at < self._stale_after else None

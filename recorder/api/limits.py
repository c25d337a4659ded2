"""Bounds on what a crowd of clients can make the recorder do.

- ``QueryLimiter``: admission control for queries. At most ``max_concurrent`` run at once, each
  in a thread of the limiter's own capacity (not the default thread pool that ``/metrics`` and
  FastAPI's sync routes share); up to ``max_queued`` wait at most ``queue_timeout_seconds`` for a
  slot; any other query is refused at once with ``Overloaded`` (HTTP 503 and ``Retry-After``).
- ``SingleFlight``: a blocking check (``/readyz``'s database ping) run in at most one thread at a
  time, whose answer is shared by every caller for a short while and waited for at most a
  deadline, so a crowd of probes against a hung database never stacks threads.
- ``LogLimiter`` and ``RateLimitFilter``: at most a few log lines per kind of message and minute,
  so a client that triggers a warning on every request cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


def default_max_concurrent_queries() -> int:
    """One query per core, and at least two so one slow query does not block every other."""
    return max(os.cpu_count() or 2, 2)


class Overloaded(Exception):
    """A query was refused because too many run or wait already (HTTP 503)."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class QueryLimiter:
    """Runs blocking query functions in threads, at most ``max_concurrent`` at once.

    A query that finds every slot taken waits, in order of arrival, if fewer than
    ``max_queued`` wait already, and at most ``queue_timeout_seconds``; otherwise it is refused
    with ``Overloaded``. The wait is the only part with a deadline: a query that got its slot
    runs to the end (its own bounds are the store's statement timeout and size limits).
    """

    def __init__(self, max_concurrent: int, max_queued: int, queue_timeout_seconds: float) -> None:
        if max_concurrent < 1 or max_queued < 0 or queue_timeout_seconds < 0:
            raise ValueError(
                "max_concurrent must be at least 1, max_queued and queue_timeout_seconds at least 0"
            )
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout_seconds = queue_timeout_seconds
        self._slots = anyio.CapacityLimiter(max_concurrent)
        self._threads = anyio.CapacityLimiter(max_concurrent)
        self._queued = 0

    @property
    def running(self) -> int:
        return int(self._slots.borrowed_tokens)

    @property
    def queued(self) -> int:
        return self._queued

    async def run(self, func: Callable[[], T]) -> T:
        """``func()`` in a thread once a slot is free; ``Overloaded`` when none frees in time."""
        if self._slots.available_tokens < 1 and self._queued >= self.max_queued:
            raise Overloaded(
                f"too many queries at once: {self.running} running and {self._queued} waiting "
                "(the server's limits); try again in a second",
                retry_after_seconds=1,
            )
        acquired = False
        self._queued += 1
        try:
            with anyio.move_on_after(self.queue_timeout_seconds):
                await self._slots.acquire()
                acquired = True
        finally:
            self._queued -= 1
        if not acquired:
            raise Overloaded(
                f"too many queries at once: no query slot freed within "
                f"{self.queue_timeout_seconds:g}s ({self.max_concurrent} run at a time); "
                "try again in a few seconds or narrow the query",
                retry_after_seconds=2,
            )
        try:
            return await anyio.to_thread.run_sync(func, limiter=self._threads)
        finally:
            self._slots.release()


class SingleFlight(Generic[T]):
    """A blocking function answered from one thread at most, with a cache and a deadline.

    ``await get()`` returns the last answer if it is younger than ``ttl_seconds``; otherwise
    it waits for the call in flight (starting one if none is) at most ``deadline_seconds`` and
    returns ``None`` when no answer came in time. A call that hangs keeps its one thread; later
    callers wait on that same call instead of starting another. The thread is a daemon, so a
    hung call never holds up the process's exit.
    """

    def __init__(
        self,
        func: Callable[[], T],
        *,
        deadline_seconds: float,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        name: str = "single-flight",
    ) -> None:
        self._func = func
        self.deadline_seconds = deadline_seconds
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._name = name
        self._answer: tuple[float, T | None] | None = None
        self._pending: asyncio.Future[T] | None = None

    async def get(self) -> T | None:
        now = self._clock()
        if self._answer is not None and now - self._answer[0] < self.ttl_seconds:
            return self._answer[1]
        if self._pending is None:
            self._pending = self._start()
        try:
            answer: T | None = await asyncio.wait_for(
                asyncio.shield(self._pending), self.deadline_seconds
            )
        except TimeoutError:
            answer = None
        self._answer = (self._clock(), answer)
        return answer

    def _start(self) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            self._pending = None
            if not future.done():
                outcome()
            if future.done() and not future.cancelled() and future.exception() is None:
                self._answer = (self._clock(), future.result())

        def call() -> None:
            outcome: Callable[[], None]
            try:
                value = self._func()
            except BaseException as exc:  # handed to the awaiting caller, raised there
                error = exc
                outcome = lambda: future.set_exception(error)  # noqa: E731
            else:
                outcome = lambda: future.set_result(value)  # noqa: E731
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop closed while the call hung: nobody waits any more
                pass

        threading.Thread(target=call, name=self._name, daemon=True).start()
        return future


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 1
    dropped: int = 0


class LogLimiter:
    """Lets at most ``burst`` messages per key through per ``interval_seconds``."""

    MAX_KEYS = 1000

    def __init__(
        self,
        *,
        burst: int = 5,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """``None`` when this message should be dropped; else how many of its kind were
        dropped since the last one that got through."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.interval_seconds:
                if window is None and len(self._windows) >= self.MAX_KEYS:
                    self._windows.clear()
                self._windows[key] = _Window(now)
                return window.dropped if window is not None else 0
            if window.passed < self.burst:
                window.passed += 1
                dropped, window.dropped = window.dropped, 0
                return dropped
            window.dropped += 1
            return None


class RateLimitFilter(logging.Filter):
    """A logging filter passing a few records per message template and minute; the next
    record that passes says how many were dropped."""

    def __init__(self, limiter: LogLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or LogLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self.limiter.allow(f"{record.name}:{record.msg}")
        if suppressed is None:
            return False
        if suppressed:
            record.msg = (
                f"{record.msg} ({suppressed} more like this in the last "
                f"{self.limiter.interval_seconds:g}s not logged)"
            )
        return True

"""Giving the memory a poll freed back to the operating system (glibc; elsewhere a no-op).

A poll at 150,000 pods allocates and frees a few hundred MB (the response, its typed items,
the rows of the write). CPython hands what it frees to glibc's heap, which keeps most of it
as free pages between the live objects: the worker's resident memory stayed about 100 MB above
what it uses, and grew by as much again after a database outage. ``trim`` returns the free
pages (glibc's ``malloc_trim``; a few milliseconds at that size), ``map_large_blocks`` keeps
large blocks out of the heap, and ``limit_arenas`` keeps the threads (poller, writer, relay)
from each spreading their garbage over a heap of their own (glibc makes up to eight per core).
Under musl, or off Linux, these do nothing. ``Turns`` keeps the worker's memory-heavy
steps (a poll's reading of its lists, a batch's write, a render of the gauges) from running at
once, so that their peaks do not add up.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_ARENA_MAX = -8
"""``mallopt``'s parameter for the most malloc arenas (glibc's malloc.h)."""
_M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter for the size from which a block is mapped apart (malloc.h)."""
DEFAULT_ARENAS = 2
MMAP_THRESHOLD_BYTES = 256 * 1024


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def available() -> bool:
    """Whether this process's C library can do either (glibc)."""
    return _LIBC is not None


def limit_arenas(count: int = DEFAULT_ARENAS) -> None:
    """At most ``count`` malloc arenas; call before the process starts its threads."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, count)


def map_large_blocks(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> None:
    """Blocks of ``threshold_bytes`` and more each mapped apart, and unmapped when freed.

    glibc starts at 128 KiB but raises the threshold to the size of each mapped block freed
    (up to 32 MiB): after a poll freed its large lists and dict tables, the next poll's went
    into the heap, between long-lived objects, and stayed resident after they were freed
    (``trim`` returns only whole free pages). Setting it keeps it fixed. At 150,000 pods the
    worker's steady peak went 443-473 -> 394 MB and its peak after a database outage 529 ->
    429 MB, polls as fast."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, threshold_bytes)


def trim() -> None:
    """Return the heap's free pages to the operating system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Turns:
    """The worker's two memory-heavy steps take turns, so that their peaks do not add up: a
    poll's reading and normalizing of its lists (at 150,000 pods the 64 MB pod list and its
    typed items) and the write of one batch (its rows; a batch parked during an outage also
    its keys and values read back). After an outage the writer writes the polls that waited
    one after another while polls go on; both at once, the worker's peak was about 120 MB
    above a steady poll's. A poll waiting goes first: the writer begins no batch while one
    waits. No wait is longer than ``max_wait_seconds``: past it, the step goes on without its
    turn (memory, not correctness, is at stake)."""

    def __init__(self, max_wait_seconds: float) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._polls_waiting = 0
        self._max_wait_seconds = max_wait_seconds
        self.overdue = 0
        """How many steps went on without their turn (waited ``max_wait_seconds``)."""

    @contextmanager
    def poll(self) -> Iterator[None]:
        """A poll's turn: as soon as no batch is being written."""
        with self._changed:
            self._polls_waiting += 1
            try:
                got = self._changed.wait_for(lambda: not self._busy, self._max_wait_seconds)
            finally:
                self._polls_waiting -= 1
            self._begin(got)
        try:
            yield
        finally:
            self._end(got)

    @contextmanager
    def write(self) -> Iterator[None]:
        """One batch's turn: when nothing else holds one and no poll waits for its own."""
        with self._changed:
            got = self._changed.wait_for(
                lambda: not self._busy and not self._polls_waiting, self._max_wait_seconds
            )
            self._begin(got)
        try:
            yield
        finally:
            self._end(got)

    def _begin(self, got: bool) -> None:
        if got:
            self._busy = True
        else:
            self.overdue += 1

    def _end(self, got: bool) -> None:
        if got:
            with self._changed:
                self._busy = False
                self._changed.notify_all()

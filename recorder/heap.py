"""Giving the memory a poll freed back to the operating system (glibc; elsewhere a no-op).

A poll at 150,000 pods allocates and frees a few hundred MB (the response, its typed items,
the rows of the write). CPython hands what it frees to glibc's heap, which keeps most of it
as free pages between the live objects: the worker's resident memory stayed about 100 MB above
what it uses, and grew by as much again after a database outage. ``trim`` returns the free
pages (glibc's ``malloc_trim``; a few milliseconds at that size), and ``limit_arenas`` keeps
the threads (poller, writer, relay) from each spreading their garbage over a heap of their own
(glibc makes up to eight per core). Under musl, or off Linux, both do nothing.
"""

from __future__ import annotations

import ctypes
import sys

_M_ARENA_MAX = -8
"""``mallopt``'s parameter for the most malloc arenas (glibc's malloc.h)."""
DEFAULT_ARENAS = 2


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


def trim() -> None:
    """Return the heap's free pages to the operating system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

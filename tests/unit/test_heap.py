"""Returning freed memory to the operating system, measured on this process's own pages."""

from __future__ import annotations

import ctypes
import os

import pytest

from recorder import heap

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.mark.skipif(not heap.available(), reason="glibc only (musl has no malloc_trim)")
def test_trim_returns_the_free_pages_between_live_blocks() -> None:
    # 64 MB of 4 KiB blocks from malloc itself (below glibc's mmap threshold, so on its
    # heap), every 64th kept alive: freed, the rest are holes glibc keeps without trim().
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    blocks = [libc.malloc(4096) for _ in range(16_384)]
    assert all(blocks)
    for block in blocks:
        libc.memset(block, 1, 4096)  # touched: resident
    kept = blocks[::64]
    for block in blocks:
        if block not in kept:
            libc.free(block)
    try:
        before = resident_bytes()
        heap.trim()
        after = resident_bytes()
    finally:
        for block in kept:
            libc.free(block)
    assert before - after > 32 * 1024 * 1024


def test_limit_arenas_and_trim_are_safe_to_call_again() -> None:
    heap.limit_arenas()
    heap.limit_arenas(heap.DEFAULT_ARENAS)
    heap.trim()
    heap.trim()

"""Returning freed memory to the operating system, measured on this process's own pages; the
turns the worker's memory-heavy steps take."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time

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


# --- turns: a poll's reading and a batch's write, one at a time --------------------------------

WAIT = 10.0
"""Longest any test here waits for a thread (a deadline, not a sleep: each returns at once)."""


def test_a_write_waits_for_the_poll_that_holds_the_turn() -> None:
    turns = heap.Turns(max_wait_seconds=WAIT)
    order: list[str] = []
    wrote = threading.Event()

    def write() -> None:
        with turns.write():
            order.append("write")
        wrote.set()

    with turns.poll():
        order.append("poll begins")
        writer = threading.Thread(target=write)
        writer.start()
        assert not wrote.wait(0.2)  # the write waits while the poll reads
        order.append("poll ends")
    writer.join(WAIT)
    assert order == ["poll begins", "poll ends", "write"]
    assert turns.overdue == 0


def test_a_waiting_poll_goes_before_the_writers_next_batch() -> None:
    turns = heap.Turns(max_wait_seconds=WAIT)
    order: list[str] = []
    first_batch = threading.Event()
    release = threading.Event()

    def writer() -> None:
        for name in ("batch 1", "batch 2"):
            with turns.write():
                order.append(name)
                first_batch.set()
                release.wait(WAIT)

    def poll() -> None:
        with turns.poll():
            order.append("poll")

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    assert first_batch.wait(WAIT)
    threads.append(threading.Thread(target=poll))
    threads[1].start()
    deadline = time.monotonic() + WAIT
    while turns._polls_waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the poll waits for its turn
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert order == ["batch 1", "poll", "batch 2"]


def test_a_turn_never_waits_past_its_bound_and_keeps_the_holders_turn() -> None:
    turns = heap.Turns(max_wait_seconds=0.2)
    held, release = threading.Event(), threading.Event()

    def stuck_write() -> None:  # a write stuck on the database
        with turns.write():
            held.set()
            release.wait(WAIT)

    writer = threading.Thread(target=stuck_write)
    writer.start()
    assert held.wait(WAIT)
    begun = time.monotonic()
    with turns.poll():  # goes on without its turn after 0.2 s
        waited = time.monotonic() - begun
    assert 0.2 <= waited < WAIT
    assert turns.overdue == 1
    # The poll that went on did not end the stuck write's turn: another batch still waits.
    begun = time.monotonic()
    with turns.write():
        assert time.monotonic() - begun >= 0.2
    assert turns.overdue == 2
    release.set()
    writer.join(WAIT)
    with turns.poll():  # free again: no wait
        pass
    assert turns.overdue == 2


RETAINED = """
import os, sys
from recorder import heap
if sys.argv[1] == "mapped":
    heap.map_large_blocks()
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * page
del bytearray(400 * 1024)[:]  # a mapped block freed: glibc raises its threshold past it
blocks, pins = [], []
for i in range(200):  # a poll's large lists and tables, each beside a long-lived object
    blocks.append(bytearray(300 * 1024))
    blocks[-1][::page] = bytes(len(blocks[-1][::page]))  # touched: resident
    pins.append(bytes(2000 + i))
before = resident()
del blocks  # no trim: mapped blocks go back when freed, heap blocks wait for one
print(before - resident())
"""


@pytest.mark.skipif(not heap.available(), reason="glibc only (musl has no mallopt)")
def test_large_blocks_mapped_apart_go_back_to_the_system_when_freed() -> None:
    """With ``map_large_blocks`` a freed large block goes back to the system at once, even
    after glibc has raised its own threshold (without it, these 60 MB are carved from the
    heap and stay resident until a trim, amid whatever else the heap holds by then)."""

    def returned(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", RETAINED, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(done.stdout)

    assert returned("mapped") > 55 * 1024 * 1024
    assert returned("dynamic") < 20 * 1024 * 1024  # the default, kept for comparison

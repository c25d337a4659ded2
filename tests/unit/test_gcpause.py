from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from recorder import gcpause


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_a_pause_stops_the_collector_and_resumes_it() -> None:
    gc.enable()
    with gcpause.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_nested_and_overlapping_pauses_resume_once_the_last_ends() -> None:
    gc.enable()
    entered, release = threading.Event(), threading.Event()

    def writer() -> None:
        with gcpause.paused():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    with gcpause.paused():
        with gcpause.paused():
            thread.start()
            assert entered.wait(10)
        assert not gc.isenabled()
    assert not gc.isenabled()  # the writer's pause still runs
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gcpause.paused():
        pass
    assert not gc.isenabled()


def test_the_collector_resumes_when_the_block_raises() -> None:
    gc.enable()
    with pytest.raises(ValueError), gcpause.paused():
        raise ValueError("boom")
    assert gc.isenabled()

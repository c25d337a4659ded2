"""A new leader counts and says what nobody polled (``recorder.elector``), on the real
PostgreSQL server: the old leader's heartbeat named its newest poll 5 s ago, at 10 samples a
poll and a 1 s interval, so 4 polls (40 samples) went unrecorded."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from recorder.elector import Elector
from recorder.store import open_store
from recorder.store.leader import LeaderMark, Leadership


def _wait_until_no_advisory_lock(url: str, deadline_seconds: float = 10.0) -> None:
    """Until the server has ended the closed leader's session (its lock with it): under
    load (the suite two at a time) the next step ran before, and found the lock still held."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        ends = time.monotonic() + deadline_seconds
        while True:
            with engine.connect() as conn:
                held = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                ).scalar_one()
            if not held:
                return
            assert time.monotonic() < ends, "the old leader's lock was not released in time"
            time.sleep(0.02)
    finally:
        engine.dispose()


def test_a_takeover_counts_the_polls_nobody_made(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(postgres_url)
    store.migrate()
    store.close()
    old = Leadership(postgres_url, lease_seconds=1.0)
    new = Leadership(postgres_url, lease_seconds=1.0)
    registry = CollectorRegistry()
    events: list[str] = []
    now = time.time()
    elector = Elector(
        new,
        registry,
        1.0,
        on_lead=lambda: events.append("lead"),
        on_lost=lambda: events.append("lost"),
        on_depose=lambda: events.append("depose"),
        clock=lambda: now,
    )
    try:
        assert old.try_lead()
        old.heartbeat(LeaderMark(int((now - 5.0) * 1000), 10))
        elector.step()  # a follower: it reads the leader's mark
        assert not elector.is_leader and not elector.may_poll
        assert registry.get_sample_value("recorder_leader") == 0
        old.close()  # the leader dies (its session is closed on a thread of its own)
        _wait_until_no_advisory_lock(postgres_url)
        with caplog.at_level(logging.INFO, logger="recorder.elector"):
            elector.step()
        assert elector.is_leader and events == ["lead"]
        assert registry.get_sample_value("recorder_leader") == 1
        assert registry.get_sample_value("recorder_unpolled_samples_total") == 40
        assert "nobody polled for 5.0s" in caplog.text and "about 40 samples" in caplog.text
    finally:
        old.close()
        new.close()

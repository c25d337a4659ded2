"""Bring a test database past full-resolution retention: one maintenance round with a one-hour
full-resolution retention, so every block that ends before ``now_ms`` minus an hour keeps its
statistics only (its samples' payloads are dropped), as a long-running recorder's would be."""

from __future__ import annotations

from recorder.store import open_store
from recorder.store.retention import RetentionPolicy
from recorder.timeutil import DAY_MS, HOUR_MS


def expire_full_resolution(database_url: str, *, now_ms: int) -> None:
    retained = open_store(
        database_url,
        retention=RetentionPolicy(full_resolution_ms=HOUR_MS, statistics_ms=30 * DAY_MS),
    )
    try:
        retained.maintain(now_ms=now_ms, grace_ms=0)
    finally:
        retained.close()

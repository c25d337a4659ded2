"""The database size and series count behind ``recorder_database_size_bytes`` and
``recorder_stored_series``, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import StoreError
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import open_store

T0 = 1_714_557_600_000


def test_size_and_series_counts(database_url: str) -> None:
    store = open_store(database_url)
    try:
        store.migrate()
        assert store.series_counts() == {}
        empty = store.size_bytes()
        assert empty > 0
        store.write(
            Batch(
                Kind.CONTAINER,
                tuple(
                    Sample(SeriesKey.for_container("ns", f"pod-{i}", "app"), T0, 15_000, i, i)
                    for i in range(500)
                ),
            ),
            now_ms=T0,
        )
        store.write(
            Batch(Kind.NODE, (Sample(SeriesKey.for_node("n1"), T0, 15_000, 1, 1),)), now_ms=T0
        )
        assert store.series_counts() == {"container": 500, "node": 1}

        registry, metrics = build_registry(SnapshotHolder(), process_collectors=False)
        metrics.refresh_store_statistics(store)
        size = registry.get_sample_value("recorder_database_size_bytes")
        assert size is not None and size >= empty
        assert registry.get_sample_value("recorder_stored_series", {"kind": "container"}) == 500
        assert registry.get_sample_value("recorder_stored_series", {"kind": "node"}) == 1

        # Compaction gives each pod its own statistics series: they are stored series too.
        store.maintain(now_ms=T0 + 2 * 3_600_000, grace_ms=0)
        assert store.series_counts() == {"container": 500, "node": 1, "pod": 500}
        metrics.refresh_store_statistics(store)
        assert registry.get_sample_value("recorder_stored_series", {"kind": "pod"}) == 500
        assert registry.get_sample_value("recorder_stored_series", {"kind": "container"}) == 500
    finally:
        store.close()


class Broken:
    def size_bytes(self) -> int:
        raise StoreError("database is down")

    def volume_bytes(self) -> None:
        raise AssertionError("not reached")

    def series_counts(self) -> dict[str, int]:
        raise AssertionError("not reached")


def test_a_failed_refresh_keeps_the_last_values() -> None:
    registry, metrics = build_registry(SnapshotHolder(), process_collectors=False)
    metrics.database_size.set(123)
    metrics.refresh_store_statistics(Broken())
    assert registry.get_sample_value("recorder_database_size_bytes") == 123


def test_the_sqlite_volume_is_watched_and_a_nearly_full_one_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        store.migrate()
        registry, metrics = build_registry(SnapshotHolder(), process_collectors=False)
        metrics.refresh_store_statistics(store)
        folder = {"folder": str(tmp_path.resolve())}
        size = registry.get_sample_value("recorder_database_volume_size_bytes", folder)
        free = registry.get_sample_value("recorder_database_volume_available_bytes", folder)
        found = os.statvfs(tmp_path)
        assert size == found.f_blocks * found.f_frsize
        assert free is not None and 0 < free <= size
    finally:
        store.close()

    class NearlyFull:
        def size_bytes(self) -> int:
            return 1

        def series_counts(self) -> dict[str, int]:
            return {}

        def volume_bytes(self) -> tuple[str, int, int]:
            return "/data", 2**30, 2**26  # 6.25 % left

    with caplog.at_level(logging.WARNING, logger="recorder.exporter.selfmetrics"):
        metrics.refresh_store_statistics(NearlyFull())
    assert "volume has 6.2% left (64 MiB of 1024 MiB)" in caplog.text


def test_postgresql_has_no_volume_gauges(database_url: str) -> None:
    store = open_store(database_url)
    try:
        store.migrate()
        registry, metrics = build_registry(SnapshotHolder(), process_collectors=False)
        metrics.refresh_store_statistics(store)
        names = {m.name for m in registry.collect() for _ in m.samples}
        has_volume = "recorder_database_volume_size_bytes" in names
        assert has_volume == database_url.startswith("sqlite")
    finally:
        store.close()

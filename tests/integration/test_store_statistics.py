"""The database size and series count behind ``recorder_database_size_bytes`` and
``recorder_stored_series``, on SQLite and PostgreSQL."""

from __future__ import annotations

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

    def series_counts(self) -> dict[str, int]:
        raise AssertionError("not reached")


def test_a_failed_refresh_keeps_the_last_values() -> None:
    registry, metrics = build_registry(SnapshotHolder(), process_collectors=False)
    metrics.database_size.set(123)
    metrics.refresh_store_statistics(Broken())
    assert registry.get_sample_value("recorder_database_size_bytes") == 123

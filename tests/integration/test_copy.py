"""recorder copy: SQLite to PostgreSQL (and back), resumable, verified."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from recorder.cli import main
from recorder.domain import (
    Agg,
    Batch,
    HistoryQuery,
    Kind,
    QueryKind,
    Resource,
    SeriesFilter,
    Tier,
)
from recorder.errors import StoreUnavailable
from recorder.query import engine
from recorder.store import Store, open_store
from recorder.store import copy as copy_module
from recorder.store.copy import HistoryCopier
from tests.integration.test_store_compactor import (
    HOUR,
    T0,
    expected,
    keys,
    read_all,
    synthetic,
    write_polls,
)


def populated(url: str) -> tuple[Store, list]:
    store = open_store(url)
    store.migrate()
    samples = synthetic(keys(5), T0, T0 + 2 * HOUR + 30 * 60_000, seed=11)
    write_polls(store, samples)
    store.maintain(now_ms=T0 + 2 * HOUR + 30 * 60_000, grace_ms=0)  # 2 blocks compacted, 1 in head
    from recorder.domain import Sample, SeriesKey

    node = Sample(SeriesKey.for_node("n1"), T0, 1, 5, 6)
    store.write(Batch(Kind.NODE, (node,), {}), now_ms=T0)
    return store, samples


def test_copy_sqlite_to_postgres_reads_back_identically(sqlite_url: str, postgres_url: str) -> None:
    source, samples = populated(sqlite_url)
    target = open_store(postgres_url)
    target.migrate()
    report = HistoryCopier(source, target).run()
    assert report.verified and report.source_samples == len(samples) + 1
    # 2 compacted blocks of 5 containers, and of their 5 pods' own statistics series.
    assert report.series == 5 + 5 + 1
    assert report.chunks_copied == 2 * (5 + 5)
    for resource in Resource:
        assert read_all(target, resource) == expected(samples, resource)
    # The pods' statistics-only chunks came along: kind=pod block statistics read the same.
    for agg in (Agg.MAX, Agg.COUNT, Agg.STDDEV, Agg.P75):
        query = HistoryQuery(
            Resource.CPU, SeriesFilter(QueryKind.POD), T0, T0 + 2 * HOUR - 1, HOUR, agg
        )
        copied, original = (
            engine.history(store, query, max_points=100) for store in (target, source)
        )
        assert copied.tier is Tier.STATISTICS
        assert len(copied.series) == 5 and copied.series == original.series, agg
    # The target keeps recording where the source stopped: old samples are not taken again.
    result = target.write(Batch(Kind.CONTAINER, tuple(samples[-3:])), now_ms=0)
    assert result.written == 0
    source.close()
    target.close()


def test_interrupted_copy_resumes(
    sqlite_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, samples = populated(sqlite_url)
    target = open_store(postgres_url)
    target.migrate()
    monkeypatch.setattr(copy_module, "_PAGE", 3)
    calls = 0

    def crash_midway(_what: str, _done: int, _total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        HistoryCopier(source, target, progress=crash_midway).run()
    report = HistoryCopier(source, target).run()
    assert report.chunks_already_there > 0 and report.verified
    assert report.target_samples == report.source_samples
    assert read_all(target, Resource.CPU) == expected(samples, Resource.CPU)
    again = HistoryCopier(source, target).run()
    assert (again.chunks_copied, again.head_samples_written) == (0, 0)
    source.close()
    target.close()


def test_copy_command(
    sqlite_url: str, postgres_url: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, samples = populated(sqlite_url)
    source.close()
    assert main(["copy", "--from", sqlite_url, "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert f"the source holds {len(samples) + 1} samples, the target {len(samples) + 1}" in out
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert main(["copy", "--from", postgres_url, "--to", back]) == 0
    restored = open_store(back)
    assert read_all(restored, Resource.MEMORY) == expected(samples, Resource.MEMORY)
    restored.close()


def _shut_out(path: str) -> sqlite3.Connection:
    """Another process holding the SQLite file in exclusive locking mode: readers wait too."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    return holder


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_database_failure_mid_copy_names_its_side(tmp_path: Path, side: str) -> None:
    """Past the opening checks, every read of the source and write of the target fails as a
    StoreError that says which side and what to do, not as a driver's exception."""
    paths = {name: str(tmp_path / f"{name}.db") for name in ("source", "target")}
    stores = {
        name: open_store(f"sqlite:///{path}", sqlite_busy_timeout_seconds=0.2)
        for name, path in paths.items()
    }
    for store in stores.values():
        store.migrate()
    holder = _shut_out(paths[side])
    try:
        with pytest.raises(
            StoreUnavailable, match=rf"copying: [a-z ]*the {side} .*database is locked"
        ):
            HistoryCopier(stores["source"], stores["target"]).run()
    finally:
        holder.close()
        for store in stores.values():
            store.close()

"""The upgrade from the previous release's schema (revision 0003, the head before the cluster
objects' 0004): a database holding head samples and an hour compacted by maintenance, taken
back to 0003 by the migrations' own downgrades (the writer of today needs tables 0003 lacks:
SQLite's head spans, 0009), is migrated to the newest revision on both databases, and every
sample reads back through the current history API, unchanged. An old and a new replica side
by side during a rollout, on PostgreSQL, as processes (the previous release run from a built
artifact): ``tests/faults/test_rollout.py``."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from alembic import command

from recorder.api.app import AppDeps, create_app
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import migrate, open_store
from recorder.store.migrate import head_revision
from tests.servers import serving

PREVIOUS_RELEASE = "0003"
HOUR_MS = 3_600_000
T0 = 1_714_521_600_000  # a block start
STEP = 30_000


def _samples(key: SeriesKey, start_ms: int, count: int, base: int) -> tuple[Sample, ...]:
    return tuple(
        Sample(key, start_ms + i * STEP, STEP, base + i * 1_000_000, (base + i) * 1024)
        for i in range(count)
    )


def test_a_previous_release_database_reads_every_sample_after_the_upgrade(
    database_url: str,
) -> None:
    assert head_revision() != PREVIOUS_RELEASE  # a newer revision exists to upgrade to
    store = open_store(database_url)
    try:
        store.migrate()
        web = SeriesKey.for_container("shop", "web", "app")
        node = SeriesKey.for_node("n1")
        # An hour that 0003's maintenance compacted into chunks, then an hour still in the head.
        old = [*_samples(web, T0, 120, 10**8), *_samples(node, T0, 120, 10**9)]
        new = [*_samples(web, T0 + HOUR_MS, 40, 2 * 10**8), *_samples(node, T0 + HOUR_MS, 40, 5)]
        for batch in (old, new):
            for kind in (Kind.CONTAINER, Kind.NODE):
                rows = tuple(s for s in batch if s.key.kind is kind)
                store.write(Batch(kind, rows), now_ms=batch[-1].timestamp_ms)
            if batch is old:
                store.maintain(now_ms=T0 + HOUR_MS + 60_000, grace_ms=0)
        command.downgrade(migrate.alembic_config(store.engine), PREVIOUS_RELEASE)
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == PREVIOUS_RELEASE
            assert conn.execute(sa.text("SELECT count(*) FROM chunks")).scalar_one() > 0
            head_rows = conn.execute(sa.text("SELECT count(*) FROM samples_head")).scalar_one()
            assert head_rows == 80  # the second hour
            tables = sa.inspect(conn).get_table_names()
            assert "head_spans" not in tables and "pod_workloads" not in tables
        store.migrate()
        assert store.schema_is_current()

        registry, _ = build_registry(SnapshotHolder())
        deps = AppDeps(store, registry, max_range_ms=400 * 86_400_000)
        with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
            for key, kind in ((web, "container"), (node, "node")):
                want = [s for s in (*old, *new) if s.key == key]
                for resource, value in (("cpu", _cores), ("memory", _bytes)):
                    answer = client.get(
                        "/api/v1/history",
                        params={
                            "resource": resource,
                            "kind": kind,
                            "start": str(T0 // 1000),
                            "end": str((T0 + 2 * HOUR_MS) // 1000),
                        },
                    )
                    assert answer.status_code == 200, answer.text
                    (series,) = answer.json()["data"]["series"]
                    got = [(t, v) for t, v in series["points"]]
                    assert got == [(s.timestamp_ms / 1000, value(s)) for s in want]
    finally:
        store.close()


def _cores(sample: Sample) -> float:
    return sample.cpu_nanocores / 1e9


def _bytes(sample: Sample) -> float:
    return float(sample.memory_bytes)

"""Migration 0002 on a database holding 0001 data: every series gets the default cluster,
chunks with samples get sums of squares, and each pod gets its summed series' statistics."""

from __future__ import annotations

import statistics

import pytest
import sqlalchemy as sa
from alembic import command

from recorder.domain import Agg, HistoryQuery, QueryKind, Resource, SeriesFilter, Tier
from recorder.query import engine
from recorder.stats.codec import encode_samples
from recorder.store import migrate, open_store
from recorder.timeutil import HOUR_MS

T0 = 1_714_521_600_000
STEP = 60_000


def chunk(sid: int, cpu: list[int], payload: bool = True) -> dict[str, object]:
    stamps = [T0 + i * STEP for i in range(len(cpu))]
    return {
        "series_id": sid,
        "block_start_ms": T0,
        "first_ms": stamps[0],
        "last_ms": stamps[-1],
        "count": len(cpu),
        "interval_ms": STEP,
        "cpu_sum": sum(cpu),
        "cpu_min": min(cpu),
        "cpu_max": max(cpu),
        "cpu_last": cpu[-1],
        "memory_sum": sum(cpu),
        "memory_min": min(cpu),
        "memory_max": max(cpu),
        "memory_last": cpu[-1],
        "cpu_sketch": b"",
        "memory_sketch": b"",
        "payload": encode_samples(stamps, [STEP] * len(cpu), cpu, cpu) if payload else None,
    }


def test_upgrade_of_0001_data(database_url: str) -> None:
    store = open_store(database_url)
    try:
        migrate.upgrade(store.engine, revision="0001")
        app = [10, 50, 20, 70]
        side = [60, 5, 40, 1]
        with store.engine.begin() as conn:
            ids = {}
            for container in ("app", "sidecar"):
                conn.execute(
                    sa.text(
                        "INSERT INTO series (kind, node, namespace, pod, container, "
                        "first_seen_ms, last_seen_ms) VALUES ('container', '', 'shop', "
                        "'web', :c, :t, :t)"
                    ),
                    {"c": container, "t": T0},
                )
                ids[container] = conn.execute(
                    sa.text("SELECT id FROM series WHERE container = :c"), {"c": container}
                ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO pod_labels (namespace, pod, labels_json, updated_ms) "
                    "VALUES ('shop', 'web', '{\"app\":\"web\"}', 0)"
                )
            )
            columns = chunk(ids["app"], app)
            insert = sa.text(
                f"INSERT INTO chunks ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + name for name in columns)})"
            )
            conn.execute(insert, [chunk(ids["app"], app), chunk(ids["sidecar"], side)])
        # Real sketches for 0001's rows: rebuild them the way 0001's compaction did.
        from recorder.stats.sketch import QuantileSketch

        with store.engine.begin() as conn:
            for sid, cpu in ((ids["app"], app), (ids["sidecar"], side)):
                sketch = QuantileSketch.of(cpu).to_bytes()
                conn.execute(
                    sa.text(
                        "UPDATE chunks SET cpu_sketch = :s, memory_sketch = :s "
                        "WHERE series_id = :id"
                    ),
                    {"s": sketch, "id": sid},
                )
        store.migrate()
        with store.engine.connect() as conn:
            clusters = conn.execute(sa.text("SELECT DISTINCT cluster FROM series")).scalars()
            assert list(clusters) == ["default"]
            squares = dict(conn.execute(sa.text("SELECT series_id, cpu_sumsq FROM chunks")).all())
        assert int.from_bytes(squares[ids["app"]], "big") == sum(v * v for v in app)
        sums = [a + b for a, b in zip(app, side, strict=True)]
        pod = SeriesFilter(QueryKind.POD, namespace="shop", pod="web")
        for agg, want in (
            (Agg.MAX, max(sums)),
            (Agg.MIN, min(sums)),
            (Agg.STDDEV, pytest.approx(statistics.pstdev(sums), rel=1e-9)),
        ):
            result = engine.history(
                store,
                HistoryQuery(Resource.CPU, pod, T0, T0 + HOUR_MS - 1, HOUR_MS, agg),
                max_points=10,
            )
            assert result.tier is Tier.STATISTICS
            assert [v for _, v in result.series[0].points] == [want]
        (info,) = engine.list_series(store, pod, limit=10)
        assert info.pod_labels == {"app": "web"}
        # And back down: pods' series go, the identity loses its cluster again.
        command.downgrade(migrate.alembic_config(store.engine), "0001")
        with store.engine.connect() as conn:
            kinds = conn.execute(sa.text("SELECT DISTINCT kind FROM series")).scalars()
            assert list(kinds) == ["container"]
    finally:
        store.close()

"""Storage benchmark: write time per poll as history grows, compaction throughput, bytes per
stored cpu+memory sample, on SQLite and PostgreSQL, with data from the built-in simulator.

    python -m bench.storage --series 10000 --polls 300
    python -m bench.storage --databases sqlite --series 2000 --polls 60   # quick look

Everything in one run, so the ratios compare like with like. PostgreSQL is reached through
RECORDER_BENCH_POSTGRES_URL (default: the test server's admin URL); a scratch database is
created and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy

from recorder.domain import Batch, Kind, Sample
from recorder.simulator import ClusterModel, SimulatorConfig
from recorder.store import Store, open_store

START = 1_714_521_600.0  # 2024-05-01T00:00:00Z: polls start on a block boundary
ADMIN_URL = os.environ.get(
    "RECORDER_BENCH_POSTGRES_URL",
    os.environ.get(
        "RECORDER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)


@dataclass
class Result:
    database: str
    series: int
    polls: int
    samples: int
    first_polls_ms: float
    last_polls_ms: float
    growth_ratio: float
    compaction_seconds: float
    compaction_samples_per_second: float
    workload_statistics_seconds: float
    """Of ``compaction_seconds``, taking the workloads' statistics (no cluster objects here:
    each pod is its own workload, the most there can be)."""
    payload_bytes_per_pair: float
    chunk_table_bytes_per_pair: float
    database_bytes_per_pair: float


def polls(series: int, count: int, resolution: float, seed: int) -> Iterator[list[Sample]]:
    """``count`` polls of a simulated cluster sized to about ``series`` series."""
    pods = max(1, int((series - series // 75) / 1.33))
    model = ClusterModel(
        SimulatorConfig(
            nodes=max(1, series // 75),
            pods=pods,
            seed=seed,
            resolution_seconds=resolution,
            churn_per_hour=0.02,
            start_time=START,
        ),
        clock=lambda: START,
    )
    for i in range(count):
        yield list(model.samples(START + i * resolution))


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    name = f"recorder_bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield (
            sqlalchemy.engine.make_url(ADMIN_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def split(samples: list[Sample]) -> list[Batch]:
    nodes = tuple(s for s in samples if s.key.kind is Kind.NODE)
    containers = tuple(s for s in samples if s.key.kind is Kind.CONTAINER)
    return [Batch(Kind.NODE, nodes), Batch(Kind.CONTAINER, containers)]


def sizes(store: Store) -> tuple[int, int, int]:
    """(payload + sketch bytes, chunk table bytes, whole database bytes). Pods' chunks have
    no payload but their sketches count: they are what compaction adds for pods."""
    with store.engine.connect() as conn:
        payload = conn.exec_driver_sql(
            "SELECT COALESCE(SUM(COALESCE(LENGTH(payload), 0) + LENGTH(cpu_sketch)"
            " + LENGTH(memory_sketch)), 0) FROM chunks"
        ).scalar_one()
        if store.dialect == "postgresql":
            conn.exec_driver_sql("CHECKPOINT")
            table = conn.exec_driver_sql("SELECT pg_total_relation_size('chunks')").scalar_one()
            whole = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
            empty = conn.exec_driver_sql("SELECT pg_database_size('template1')").scalar_one()
            whole -= empty
        else:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.commit()
            conn.exec_driver_sql("VACUUM")
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            try:
                table = conn.exec_driver_sql(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name IN "
                    "('chunks', 'ix_chunks_block_start_ms')"
                ).scalar_one()
            except sqlalchemy.exc.OperationalError:  # SQLite built without dbstat
                table = payload
            whole = conn.exec_driver_sql("PRAGMA page_count").scalar_one() * page
    return int(payload), int(table), int(whole)


def run(kind: str, series: int, count: int, resolution: float, window: int) -> Result:
    with database(kind) as url:
        store = open_store(url)
        store.migrate()
        store.interval_ms = round(resolution * 1000)  # the workloads' instants
        timings: list[float] = []
        total = 0
        for samples in polls(series, count, resolution, seed=1):
            now_ms = samples[0].timestamp_ms
            started = time.perf_counter()
            for batch in split(samples):
                total += store.write(batch, now_ms=now_ms).written
            timings.append((time.perf_counter() - started) * 1000)
        end_ms = int(START * 1000 + count * resolution * 1000)
        # Close every block that has samples, then compact them all.
        report = store.maintain(now_ms=end_ms + store.block_ms, grace_ms=0)
        payload, table, whole = sizes(store)
        store.close()
    first = statistics.median(timings[:window])
    last = statistics.median(timings[-window:])
    return Result(
        database=kind,
        series=len(next(polls(series, 1, resolution, seed=1))),
        polls=count,
        samples=total,
        first_polls_ms=round(first, 2),
        last_polls_ms=round(last, 2),
        growth_ratio=round(last / first, 3),
        compaction_seconds=round(report.compaction.seconds, 2),
        compaction_samples_per_second=round(report.compaction.samples / report.compaction.seconds),
        workload_statistics_seconds=round(report.compaction.workload_seconds, 2),
        payload_bytes_per_pair=round(payload / total, 2),
        chunk_table_bytes_per_pair=round(table / total, 2),
        database_bytes_per_pair=round(whole / total, 2),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--resolution", type=float, default=15.0, help="seconds between polls")
    parser.add_argument("--window", type=int, default=10, help="polls in each median")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [
        run(kind, args.series, args.polls, args.resolution, args.window)
        for kind in args.databases.split(",")
    ]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    print(
        f"{'database':<11}{'series':>8}{'polls':>7}{'first ms':>10}{'last ms':>9}{'ratio':>7}"
        f"{'compact s':>11}{'samples/s':>11}{'workload s':>12}{'payload B':>11}{'chunks B':>10}"
        f"{'db B':>8}"
    )
    for r in results:
        print(
            f"{r.database:<11}{r.series:>8}{r.polls:>7}{r.first_polls_ms:>10}"
            f"{r.last_polls_ms:>9}{r.growth_ratio:>7}{r.compaction_seconds:>11}"
            f"{r.compaction_samples_per_second:>11}{r.workload_statistics_seconds:>12}"
            f"{r.payload_bytes_per_pair:>11}"
            f"{r.chunk_table_bytes_per_pair:>10}{r.database_bytes_per_pair:>8}"
        )
    print(
        "first/last ms: median write time of the first/last polls; ratio last/first (target "
        "<= 1.5); workload s: of the compaction, the workloads' statistics (each pod its own "
        "workload); bytes per cpu+memory pair after compaction: payload+sketches, the chunks table "
        "with its indexes, the whole database."
    )


if __name__ == "__main__":
    main()

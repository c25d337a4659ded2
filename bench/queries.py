"""Query benchmark: the history questions users ask, on SQLite and PostgreSQL.

    python -m bench.queries                       # 5,000 series x 7 days, 1 container x 30 days
    python -m bench.queries --series 500 --days 2 --databases sqlite   # quick look

The history is written as compacted chunks directly (the write path has its own benchmark,
bench/storage.py), each pod's statistics chunk beside its containers' as compaction makes them,
then rolled up by day as maintenance does: one container over 30 days at
15 s, and ``--series`` containers in 50 namespaces over ``--days`` days at 60 s. Then, each
timed as the best of ``--repeat`` runs:

- one container over 30 days at a 5 m step (raw tier: every payload decoded);
- the same at a 1 h step, p95 (block statistics);
- a namespace summary over 7 days across all series (block statistics);
- ``top pods -A --since 7d`` over all series.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select

from bench.storage import database
from recorder.domain import DEFAULT_CLUSTER, Agg, HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.query import engine
from recorder.stats import dedup
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples
from recorder.store import Store, open_store, rollups, schema
from recorder.store.compactor import ChunkRow
from recorder.timeutil import DAY_MS, HOUR_MS

HOUR = HOUR_MS
DAY = DAY_MS
NOW = 1_717_200_000_000 - 1_717_200_000_000 % HOUR  # a block boundary in June 2024


def synthesize(store: Store, series: int, days: int) -> None:
    """The chunks compaction would have made: each container's, and each pod's statistics-only
    chunk of its containers' sum (kind=pod and ``top pods`` read those)."""
    rng = random.Random(3)
    identities = [("bench", "long-lived", "app")] + [
        (f"ns-{i % 50:02d}", f"pod-{i // 2}", f"c{i % 2}") for i in range(series)
    ]
    pods = list(dict.fromkeys((ns, pod) for ns, pod, _ in identities))
    with store.engine.begin() as conn:
        rows = [
            {"kind": "container", "namespace": ns, "pod": pod, "container": container}
            for ns, pod, container in identities
        ] + [{"kind": "pod", "namespace": ns, "pod": pod, "container": ""} for ns, pod in pods]
        conn.execute(
            insert(schema.series),
            [
                {
                    **row,
                    "cluster": DEFAULT_CLUSTER,
                    "node": "",
                    "first_seen_ms": NOW - 30 * DAY,
                    "last_seen_ms": NOW,
                }
                for row in rows
            ],
        )
        s = schema.series
        ids = {
            (kind, ns, pod, container): sid
            for sid, kind, ns, pod, container in conn.execute(
                select(s.c.id, s.c.kind, s.c.namespace, s.c.pod, s.c.container)
            )
        }
        conn.execute(
            insert(schema.pod_labels),
            [
                {
                    "cluster": DEFAULT_CLUSTER,
                    "namespace": ns,
                    "pod": pod,
                    "labels_json": '{"app":"bench"}',
                    "updated_ms": NOW,
                }
                for ns, pod in pods
            ],
        )
    containers: dict[tuple[str, str], list[str]] = {}
    for ns, pod, container in identities:
        containers.setdefault((ns, pod), []).append(container)
    batch: list[dict[str, Any]] = []

    def add(row: ChunkRow) -> None:
        nonlocal batch
        batch.append(row.values())
        if len(batch) >= 5_000:
            with store.engine.begin() as conn:
                conn.execute(insert(schema.chunks), batch)
            batch = []

    for ns, pod in pods:
        # One container over 30 days at 15 s; the others over ``days`` at 60 s.
        start, step = (NOW - 30 * DAY, 15_000) if ns == "bench" else (NOW - days * DAY, 60_000)
        levels = {
            name: (rng.randrange(10**6, 10**9), rng.randrange(10**5, 10**6) * 4096)
            for name in containers[(ns, pod)]
        }
        for block in range(start, NOW, HOUR):
            stamps = list(range(block, block + HOUR, step))
            runs = []
            for name, (level, memory) in levels.items():
                cpu = [max(0, int(rng.gauss(level, level / 10))) for _ in stamps]
                mem = [memory + 4096 * rng.randrange(-8, 8) for _ in stamps]
                run = ChunkSamples(stamps, [30_000] * len(stamps), cpu, mem)
                runs.append(run)
                add(ChunkRow.of(ids[("container", ns, pod, name)], block, run))
            pod_stats = BlockStats.of(dedup.sum_runs(runs))
            add(ChunkRow(ids[("pod", ns, pod, "")], block, pod_stats, None))
    if batch:
        with store.engine.begin() as conn:
            conn.execute(insert(schema.chunks), batch)
    rollups.build(store.engine, NOW, ())  # what maintenance does once the days have closed


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(kind: str, series: int, days: int, repeat: int) -> dict[str, float]:
    with database(kind) as url:
        store = open_store(url)
        store.migrate()
        began = time.perf_counter()
        synthesize(store, series, days)
        setup = time.perf_counter() - began
        one = SeriesFilter(QueryKind.CONTAINER, namespace="bench", pod="long-lived")
        every = SeriesFilter(QueryKind.CONTAINER)

        def history(step_ms: int, agg: Agg) -> Callable[[], object]:
            query = HistoryQuery(Resource.CPU, one, NOW - 30 * DAY, NOW, step_ms, agg)
            return lambda: engine.history(store, query, max_points=10**6, max_samples=10**7)

        results = {
            "setup_seconds": setup,
            "container_30d_5m_avg": best(repeat, history(300_000, Agg.AVG)),
            "container_30d_1h_p95": best(repeat, history(HOUR, Agg.P95)),
            "namespace_summary_7d": best(
                repeat,
                lambda: engine.summarize(
                    store, every, "namespace", NOW - 7 * DAY, NOW, max_groups=10**5
                ),
            ),
            "top_pods_7d_p95": best(
                repeat,
                lambda: engine.top(store, every, NOW - 7 * DAY, NOW, Agg.P95, max_samples=10**7),
            ),
        }
        store.close()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    names = [
        "setup_seconds",
        "container_30d_5m_avg",
        "container_30d_1h_p95",
        "namespace_summary_7d",
        "top_pods_7d_p95",
    ]
    print(f"{'database':<11}" + "".join(f"{n:>24}" for n in names))
    for kind in args.databases.split(","):
        found = measure(kind, args.series, args.days, args.repeat)
        print(f"{kind:<11}" + "".join(f"{found[n]:>23.3f}s" for n in names))


if __name__ == "__main__":
    main()

"""A 400-day Grafana panel through the Prometheus API's evaluator, answered from the tiers:
``sum by (namespace) (avg_over_time(recorder_container_cpu_usage_cores{namespace="X"}[1d]))``
over 400 days at a 1 d step, for a namespace of 100 containers in a database of 5,000 series,
on SQLite and PostgreSQL (target 1 s), and the same panel refreshed through the result cache.

    python -m bench.promql_tiers                               # 5,000 series, both databases
    python -m bench.promql_tiers --other-days 30 --json out.json   # a modest run

What is synthesised (written straight into the tables, as ``bench.history_scale`` does):
``--series`` containers, two per pod, in namespaces of 100 containers; **statistics only**
(as after full-resolution retention): day rollups for the 400 days before today for the
measured namespace and for the ``--other-days`` before today for the others (the query reads
only its namespace's; the others make the series dictionary and the tables that size), and
hourly chunk statistics for today's 13 closed hours. The records are drawn from a pool made of
synthetic samples at 60 s that start 7 s into their day or hour (no sample on a window's
edge), so their sketches have real sizes but series share records.

Each figure is the best of ``--repeat`` runs of the whole query (parse, series lookup, tier
reads, evaluation, the JSON ``data``); "cached" is a dashboard refresh: the same panel a step
later, through ``ResultCache`` (the past steps from the cache, the new one evaluated).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.history_scale import CHUNK_COLUMNS, ROLLUP_COLUMNS, Writer, _placed, _samples, _template
from bench.queries import best
from bench.storage import database
from recorder.domain import DEFAULT_CLUSTER
from recorder.query.promql.cache import ResultCache
from recorder.query.promql.evaluation import range_query
from recorder.query.promql.source import StoreSource
from recorder.query.promql.wire import result_data
from recorder.stats.block import BlockStats
from recorder.store import Store, open_store
from recorder.timeutil import DAY_MS, HOUR_MS

TODAY = 1_717_200_000_000  # 2024-06-01T00:00:00Z
NOW = TODAY + 13 * HOUR_MS + 30 * 60_000
DAYS = 400
PER_NAMESPACE = 100
MEASURED = "ns-000"
POOL = 256
QUERY = (
    "sum by (namespace) "
    f'(avg_over_time(recorder_container_cpu_usage_cores{{namespace="{MEASURED}"}}[1d]))'
)
TARGET_SECONDS = 1.0


def _pool(rng: random.Random, length_ms: int) -> list[tuple[Any, ...]]:
    """Statistics records of one container over ``length_ms`` at 60 s, from 7 s in."""
    return [
        _template(
            BlockStats.of(
                _samples(rng, 7_000, length_ms - 7_000, 60_000, rng.randrange(10**6, 10**9))
            ),
            0,
        )
        for _ in range(POOL)
    ]


def synthesize(store: Store, series: int, other_days: int, seed: int = 5) -> dict[str, int]:
    rng = random.Random(seed)
    names = [
        (f"ns-{c // PER_NAMESPACE:03d}", f"pod-{c // 2:05d}", f"c{c % 2}") for c in range(series)
    ]
    first = TODAY - DAYS * DAY_MS
    writer = Writer(store)
    counts: dict[str, int] = {}
    try:
        counts["series"] = writer.rows(
            "series",
            (
                *("id", "cluster", "kind", "node", "namespace", "pod", "container"),
                *("first_seen_ms", "last_seen_ms"),
            ),
            (
                (sid, DEFAULT_CLUSTER, "container", "", ns, pod, c, first, NOW - HOUR_MS)
                for sid, (ns, pod, c) in enumerate(names, start=1)
            ),
        )
        days, hours = _pool(rng, DAY_MS), _pool(rng, HOUR_MS)

        def rollup_rows() -> Iterator[tuple[Any, ...]]:
            for sid, (ns, _pod, _c) in enumerate(names, start=1):
                span = DAYS if ns == MEASURED else other_days
                for day in range(TODAY - span * DAY_MS, TODAY, DAY_MS):
                    yield (sid, day, *_placed(days[rng.randrange(POOL)], day))

        counts["rollups"] = writer.rows("rollups", ROLLUP_COLUMNS, rollup_rows())

        def chunk_rows() -> Iterator[tuple[Any, ...]]:
            for sid in range(1, len(names) + 1):
                for start in range(TODAY, NOW - NOW % HOUR_MS, HOUR_MS):
                    yield (sid, start, *_placed(hours[rng.randrange(POOL)], start), None)

        counts["chunks"] = writer.rows("chunks", CHUNK_COLUMNS, chunk_rows())
    finally:
        writer.close()
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return counts


def measure(kind: str, series: int, other_days: int, repeat: int) -> dict[str, Any]:
    with database(kind) as url:
        store = open_store(url)
        store.migrate()
        began = time.perf_counter()
        rows = synthesize(store, series, other_days)
        setup = time.perf_counter() - began
        print(f"{kind}: synthesised {rows} in {setup:.0f}s", file=sys.stderr)
        start, end = TODAY - (DAYS - 1) * DAY_MS, TODAY

        def panel() -> dict[str, Any]:
            source = StoreSource(store)
            result = range_query(source, QUERY, start, end, DAY_MS)
            return {"data": result_data(result), "read": source.samples_read}

        answer = panel()
        points = len(answer["data"]["result"][0]["values"])
        seconds = best(repeat, panel)
        cached = math.inf
        for _ in range(repeat):
            cache = ResultCache()  # primed with the panel a step earlier, then refreshed
            cache.range_query(
                StoreSource(store), QUERY, start - DAY_MS, end - DAY_MS, DAY_MS, now_ms=NOW
            )
            began = time.perf_counter()
            refreshed = cache.range_query(StoreSource(store), QUERY, start, end, DAY_MS, now_ms=NOW)
            result_data(refreshed)
            cached = min(cached, time.perf_counter() - began)
        store.close()
    return {
        "setup_seconds": setup,
        "rows": rows,
        "points": points,
        "samples_decoded": answer["read"],
        "seconds": seconds,
        "cached_seconds": cached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5_000, help="containers (default 5,000)")
    parser.add_argument(
        "--other-days",
        type=int,
        default=DAYS,
        help="days of rollups of the series outside the measured namespace (default 400)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    args = parser.parse_args()
    kinds = args.databases.split(",")
    found = {k: measure(k, args.series, args.other_days, args.repeat) for k in kinds}
    print(
        f"{QUERY}\n{DAYS} days at a 1 d step; {args.series:,} container series, "
        f"{PER_NAMESPACE} in {MEASURED}; statistics-only history synthesised (pooled day "
        f"rollups: {DAYS} days for {MEASURED}, {args.other_days} for the others; today's "
        f"hourly chunk statistics); best of {args.repeat}"
    )
    header = (
        f"{'database':<12}{'points':>8}{'decoded':>9}{'query':>10}{'cached':>10}{'target':>8}  met"
    )
    print(header)
    print("-" * len(header))
    for kind in kinds:
        f = found[kind]
        met = f["seconds"] <= TARGET_SECONDS
        print(
            f"{kind:<12}{f['points']:>8}{f['samples_decoded']:>9}{f['seconds']:>9.3f}s"
            f"{f['cached_seconds']:>9.3f}s{TARGET_SECONDS:>7g}s  {'yes' if met else 'NO'}"
        )
    if args.json:
        out = {
            "query": QUERY,
            "days": DAYS,
            "step": "1d",
            "series": args.series,
            "other_days": args.other_days,
            "repeat": args.repeat,
            "synthesised": "statistics only (pooled day rollups and today's hourly chunks)",
            "target_seconds": TARGET_SECONDS,
            "results": found,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()

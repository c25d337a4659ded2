"""History at scale: the four history questions of issue 13 at 200,000 series, on SQLite and
PostgreSQL in one run, against their targets.

    python -m bench.history_scale                          # 200,000 series, both databases
    python -m bench.history_scale --series 20000           # a quick look
    python -m bench.history_scale --json results.json      # the figures as JSON too

What is synthesised (written straight into the tables with executemany / COPY; the write path
and compaction have their own benchmarks):

- ``--series`` containers, two per pod, in namespaces of 1,000 pods; each pod also has its own
  statistics series (kind ``pod``), as compaction makes them;
- **statistics only** for them: day rollups for every series over the 8 days before today (as
  maintenance makes them once a day has closed, with each day's namespace rollups made from
  them by ``rollups.build_namespaces``), and hourly chunk statistics without payload
  (as after full-resolution retention) for the measured namespace's pods and containers from
  then until now. The statistics records are drawn from a pool made from synthetic samples
  (CPU Gaussian around a level, memory moving by pages; a day at 60 s, an hour at 60 s), so
  their sketches have the sizes real ones have, but series share records;
- **full resolution** for one container: 30 days of samples at 15 s (payloads), with its pod's
  statistics chunks and both series' day rollups.

"Now" is 13:30 UTC, so ``--since 7d`` windows are snapped to the 7 whole days before today.
Each query is timed as the best of ``--repeat`` runs through the engine and the output the
API or the CLI renders:

- one container, 30 days at a 5 m step, ``agg=avg`` and ``agg=max`` (raw tier: every payload
  decoded), target 100 ms;
- ``recorder top pods -A --since 7d --agg p95`` (table), target 10 s;
- ``/api/v1/summary?group_by=namespace`` over 7 days (JSON), target 10 s;
- a 7-day ``kind=pod`` history of the measured namespace (1,000 pods) at a 1 h step, ``agg=avg``
  and ``agg=max`` (JSON), target 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.queries import best
from bench.storage import database
from recorder.domain import DEFAULT_CLUSTER, Agg, HistoryQuery, QueryKind, Resource, SeriesFilter
from recorder.query import engine, formats, params
from recorder.stats import block, dedup
from recorder.stats.block import BlockStats
from recorder.stats.codec import ChunkSamples, encode_samples
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store import Store, open_store, rollups
from recorder.timeutil import DAY_MS, HOUR_MS

TODAY = 1_717_200_000_000  # 2024-06-01T00:00:00Z
NOW = TODAY + 13 * HOUR_MS + 30 * 60_000
PODS_PER_NAMESPACE = 1_000
MEASURED = "ns-000"
ROLLUP_DAYS = 8
POOL = 512

CHUNK_COLUMNS = ("series_id", "block_start_ms", *block.COLUMNS, "payload")
ROLLUP_COLUMNS = ("series_id", "day_start_ms", *block.COLUMNS)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    target_seconds: float


TARGETS = (
    Target("container 30d, 5m step, avg (raw tier)", 0.1),
    Target("container 30d, 5m step, max (raw tier)", 0.1),
    Target("top pods -A --since 7d --agg p95", 10.0),
    Target("summary group_by=namespace, 7d", 10.0),
    Target("kind=pod history, 1,000 pods, 7d, 1h step, avg", 1.0),
    Target("kind=pod history, 1,000 pods, 7d, 1h step, max", 1.0),
)


# --- synthesis ------------------------------------------------------------------------------


def _samples(rng: random.Random, start: int, length_ms: int, step: int, level: int) -> ChunkSamples:
    stamps = list(range(start, start + length_ms, step))
    memory = rng.randrange(10**5, 10**6) * 4096
    cpu = [max(0, int(rng.gauss(level, level / 10))) for _ in stamps]
    mem = [memory + 4096 * rng.randrange(-8, 8) for _ in stamps]
    return ChunkSamples(stamps, [30_000] * len(stamps), cpu, mem)


def _template(stats: BlockStats, start: int) -> tuple[Any, ...]:
    """A statistics record as stored, its first and last timestamps relative to ``start``."""
    values = stats.to_columns()
    values["first_ms"] -= start
    values["last_ms"] -= start
    return tuple(values[name] for name in block.COLUMNS)


def _pool(rng: random.Random, length_ms: int, pods: bool) -> list[tuple[Any, ...]]:
    """Statistics records of one series (or, ``pods``, of a two-container pod's sum) over
    ``length_ms`` at 60 s."""
    out = []
    for _ in range(POOL):
        runs = [
            _samples(rng, 0, length_ms, 60_000, rng.randrange(10**6, 10**9))
            for _ in range(2 if pods else 1)
        ]
        out.append(_template(BlockStats.of(dedup.sum_runs(runs)), 0))
    return out


def _placed(template: tuple[Any, ...], start: int) -> tuple[Any, ...]:
    return (template[0] + start, template[1] + start, *template[2:])


class Writer:
    """Bulk rows into one table: executemany on SQLite, binary COPY on PostgreSQL."""

    def __init__(self, store: Store):
        self.store = store
        self.raw = store.engine.raw_connection()
        self.postgres = store.dialect == "postgresql"

    def rows(self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]) -> int:
        count = 0
        cursor = self.raw.cursor()
        if self.postgres:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        else:
            marks = ", ".join("?" for _ in columns)
            statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= 20_000:
                    cursor.executemany(statement, batch)
                    count += len(batch)
                    batch = []
            cursor.executemany(statement, batch)
            count += len(batch)
        self.raw.commit()
        return count

    def close(self) -> None:
        self.raw.close()


def synthesize(store: Store, series: int, seed: int = 3) -> dict[str, int]:
    """Writes the history described in the module docstring; returns rows per table."""
    rng = random.Random(seed)
    pods = max(1, series // 2)
    names = [(f"ns-{p // PODS_PER_NAMESPACE:03d}", f"pod-{p:06d}") for p in range(pods)]
    identities: list[tuple[str, str, str, str]] = [
        ("container", "bench", "long-lived", "app"),
        ("pod", "bench", "long-lived", ""),
    ]
    for ns, pod in names:
        identities += [("container", ns, pod, "c0"), ("container", ns, pod, "c1")]
        identities.append(("pod", ns, pod, ""))
    writer = Writer(store)
    counts: dict[str, int] = {}
    try:
        first = TODAY - 30 * DAY_MS
        counts["series"] = writer.rows(
            "series",
            (
                "id",
                "cluster",
                "kind",
                "node",
                "namespace",
                "pod",
                "container",
                "first_seen_ms",
                "last_seen_ms",
            ),
            (
                (sid, DEFAULT_CLUSTER, kind, "", ns, pod, container, first, NOW - HOUR_MS)
                for sid, (kind, ns, pod, container) in enumerate(identities, start=1)
            ),
        )
        counts["pod_labels"] = writer.rows(
            "pod_labels",
            ("cluster", "namespace", "pod", "labels_json", "updated_ms"),
            (
                (DEFAULT_CLUSTER, ns, pod, json.dumps({"app": pod[:-2], "tier": "web"}), NOW)
                for ns, pod in [("bench", "long-lived"), *names]
            ),
        )
        days = {False: _pool(rng, DAY_MS, False), True: _pool(rng, DAY_MS, True)}
        hours = {False: _pool(rng, HOUR_MS, False), True: _pool(rng, HOUR_MS, True)}
        # The one container at full resolution: its chunks, its pod's, and their rollups.
        long_rows, long_rollups = _long_lived(rng)
        counts["chunks"] = writer.rows("chunks", CHUNK_COLUMNS, iter(long_rows))
        roll_start = TODAY - ROLLUP_DAYS * DAY_MS

        def rollup_rows() -> Iterator[tuple[Any, ...]]:
            yield from long_rollups
            for sid, (kind, ns, _pod, _c) in enumerate(identities, start=1):
                if ns == "bench":
                    continue
                pool = days[kind == "pod"]
                for day in range(roll_start, TODAY, DAY_MS):
                    yield (sid, day, *_placed(pool[rng.randrange(POOL)], day))

        counts["rollups"] = writer.rows("rollups", ROLLUP_COLUMNS, rollup_rows())

        def chunk_rows() -> Iterator[tuple[Any, ...]]:
            for sid, (kind, ns, _pod, _c) in enumerate(identities, start=1):
                if ns != MEASURED:
                    continue
                pool = hours[kind == "pod"]
                for start in range(roll_start, NOW - NOW % HOUR_MS, HOUR_MS):
                    yield (sid, start, *_placed(pool[rng.randrange(POOL)], start), None)

        counts["chunks"] += writer.rows("chunks", CHUNK_COLUMNS, chunk_rows())
    finally:
        writer.close()
    # Each rolled-up day's namespace rollups, made from its rollups as maintenance makes them.
    counts["namespace_rollups"] = 0
    for day in range(TODAY - 30 * DAY_MS, TODAY, DAY_MS):
        with store.engine.begin() as conn:
            counts["namespace_rollups"] += rollups.build_namespaces(conn, day)
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    return counts


def _long_lived(rng: random.Random) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """30 days at 15 s of container 1 (``bench/long-lived/app``) and its pod (series 2)."""
    chunk_rows: list[tuple[Any, ...]] = []
    day_blocks: dict[tuple[int, int], list[BlockStats]] = {}
    level = rng.randrange(10**7, 10**9)
    for start in range(TODAY - 30 * DAY_MS, NOW - NOW % HOUR_MS, HOUR_MS):
        run = _samples(rng, start, HOUR_MS, 15_000, level)
        stats = BlockStats.of(run)
        payload = encode_samples(
            run.timestamps_ms, run.windows_ms, run.cpu_nanocores, run.memory_bytes
        )
        for sid, pay in ((1, payload), (2, None)):
            values = stats.to_columns()
            chunk_rows.append((sid, start, *(values[n] for n in block.COLUMNS), pay))
            if start < TODAY:
                day_blocks.setdefault((sid, start - start % DAY_MS), []).append(stats)
    rollup_rows = [
        (sid, day, *(block.merge(parts).to_columns()[n] for n in block.COLUMNS))
        for (sid, day), parts in sorted(day_blocks.items())
    ]
    return chunk_rows, rollup_rows


# --- measuring ------------------------------------------------------------------------------


def queries(store: Store) -> list[Callable[[], object]]:
    one = SeriesFilter(QueryKind.CONTAINER, namespace="bench", pod="long-lived", container="app")
    pods = SeriesFilter(QueryKind.POD, namespace=MEASURED)

    def history(where: SeriesFilter, start_ms: int, step_ms: int, agg: Agg) -> Callable[[], bytes]:
        query = HistoryQuery(Resource.CPU, where, start_ms, NOW, step_ms, agg)

        def run() -> bytes:
            result = engine.history(store, query, max_points=10**7, max_samples=10**7)
            # What /api/v1/history answers with (not json.dumps of history_json: slower).
            return formats.history_json_bytes(result, Resource.CPU, where.kind.value, step_ms, agg)

        return run

    window = params.day_window(NOW - 7 * DAY_MS, NOW)  # what top and summary snap --since 7d to

    def top() -> str:
        where = SeriesFilter(QueryKind.POD)
        rows = engine.top(store, where, window.start_ms, window.end_ms, Agg.P95)
        return formats.top_snapped(window) + formats.top_table(
            formats.rank_top(rows, None),
            nodes=False,
            all_namespaces=True,
            containers=False,
            headers=True,
            total=False,
        )

    def summary() -> str:
        groups = engine.summarize(
            store,
            SeriesFilter(QueryKind.CONTAINER),
            "namespace",
            window.start_ms,
            window.end_ms,
            max_groups=10**6,
        )
        return json.dumps(formats.summary_json(groups, "namespace", window, RELATIVE_ACCURACY))

    return [
        history(one, NOW - 30 * DAY_MS, 300_000, Agg.AVG),
        history(one, NOW - 30 * DAY_MS, 300_000, Agg.MAX),
        top,
        summary,
        history(pods, NOW - 7 * DAY_MS, HOUR_MS, Agg.AVG),
        history(pods, NOW - 7 * DAY_MS, HOUR_MS, Agg.MAX),
    ]


def measure(kind: str, series: int, repeat: int) -> dict[str, Any]:
    with database(kind) as url:
        store = open_store(url)
        store.migrate()
        began = time.perf_counter()
        rows = synthesize(store, series)
        setup = time.perf_counter() - began
        print(f"{kind}: synthesised {rows} in {setup:.0f}s", file=sys.stderr)
        timings = [best(repeat, run) for run in queries(store)]
        store.close()
    return {"setup_seconds": setup, "rows": rows, "seconds": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200_000, help="containers (default 200,000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    args = parser.parse_args()
    kinds = args.databases.split(",")
    found = {kind: measure(kind, args.series, args.repeat) for kind in kinds}
    print(
        f"{args.series:,} containers ({args.series // 2:,} pods); statistics-only history "
        "synthesised (pooled records; day rollups for all series, hourly chunk statistics for "
        f"{MEASURED}), one container at full resolution (30 days at 15 s); top and summary "
        "on --since 7d snapped to the 7 whole UTC days before today; best of "
        f"{args.repeat}"
    )
    header = f"{'query':<50}{'target':>9}" + "".join(f"{k:>12}" for k in kinds) + "  met"
    print(header)
    print("-" * len(header))
    for index, target in enumerate(TARGETS):
        times = [found[k]["seconds"][index] for k in kinds]
        met = all(t <= target.target_seconds for t in times)
        cells = "".join(f"{t:>11.3f}s" for t in times)
        print(f"{target.name:<50}{target.target_seconds:>8g}s{cells}  {'yes' if met else 'NO'}")
    if args.json:
        out = {
            "series": args.series,
            "repeat": args.repeat,
            "synthesised": "statistics only (pooled records), one container at full resolution",
            "setup_seconds": {k: found[k]["setup_seconds"] for k in kinds},
            "rows": {k: found[k]["rows"] for k in kinds},
            "queries": [
                {
                    "query": target.name,
                    "target_seconds": target.target_seconds,
                    **{f"{k}_seconds": found[k]["seconds"][i] for k in kinds},
                    "met": all(found[k]["seconds"][i] <= target.target_seconds for k in kinds),
                }
                for i, target in enumerate(TARGETS)
            ],
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()

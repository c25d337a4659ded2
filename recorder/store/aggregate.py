"""Aggregation of stored samples into buckets, from raw samples or from chunk statistics.

Two tiers answer the same questions:

- **raw**: every sample in the range is decoded (chunk payloads and the head) and aggregated
  exactly; percentiles are exact (the rank rule of ``sketch.exact_quantile``).
- **chunk statistics**: a block that lies wholly inside one bucket and inside the range is
  taken from its chunk row (count, sum, min, max, last, sketch) without decoding its payload;
  blocks cut by the range's edges and the head's samples are decoded and added. avg, min, max,
  sum, count and last stay exact; percentiles come from merged sketches (relative error
  ``sketch.RELATIVE_ACCURACY``). A block whose payload has expired is taken whole even where
  the range cuts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.stats.codec import decode_samples
from recorder.stats.sketch import QuantileSketch, exact_quantile
from recorder.store import schema
from recorder.store.compactor import smallest_gap
from recorder.store.rollups import DAY_MS, day_of, watermark

BucketOf = Callable[[int], int]


@dataclass(slots=True)
class Accumulator:
    """Everything the aggregations need about the samples of one series in one bucket."""

    exact: bool
    count: int = 0
    total: int = 0
    minimum: int = 0
    maximum: int = 0
    first_ms: int = 0
    last_ms: int = -1
    last: int = 0
    interval_ms: int = 0
    """Smallest gap between consecutive samples seen (the resolution); 0: unknown."""
    values: list[int] = field(default_factory=list)
    sketch: QuantileSketch | None = None

    def add_values(self, timestamps: Sequence[int], values: Sequence[int]) -> None:
        if not values:
            return
        low, high = min(values), max(values)
        if self.count == 0:
            self.minimum, self.maximum, self.first_ms = low, high, timestamps[0]
        else:
            self.minimum = min(self.minimum, low)
            self.maximum = max(self.maximum, high)
            self.first_ms = min(self.first_ms, timestamps[0])
        self.count += len(values)
        self.total += sum(values)
        if timestamps[-1] > self.last_ms:
            self.last_ms, self.last = timestamps[-1], values[-1]
        self._note_interval(smallest_gap(timestamps))
        if self.exact:
            self.values.extend(values)
        else:
            if self.sketch is None:
                self.sketch = QuantileSketch()
            self.sketch.add_many(values)

    def add_statistics(
        self,
        count: int,
        total: int,
        low: int,
        high: int,
        first_ms: int,
        last_ms: int,
        last: int,
        sketch: bytes,
        interval_ms: int,
    ) -> None:
        if self.count == 0:
            self.minimum, self.maximum, self.first_ms = low, high, first_ms
        else:
            self.minimum = min(self.minimum, low)
            self.maximum = max(self.maximum, high)
            self.first_ms = min(self.first_ms, first_ms)
        self.count += count
        self.total += total
        if last_ms > self.last_ms:
            self.last_ms, self.last = last_ms, last
        self._note_interval(interval_ms)
        stored = QuantileSketch.from_bytes(sketch)
        if self.sketch is None:
            self.sketch = stored
        else:
            self.sketch.merge(stored)

    def _note_interval(self, interval_ms: int) -> None:
        if interval_ms > 0 and (self.interval_ms == 0 or interval_ms < self.interval_ms):
            self.interval_ms = interval_ms

    def quantile(self, q: float) -> float:
        if self.exact:
            return exact_quantile(self.values, q)
        assert self.sketch is not None
        return self.sketch.quantile(q)


Key = tuple[int, int]
"""(series id, bucket start ms)"""


class Scan:
    """Accumulates the samples of some series between ``start_ms`` and ``end_ms`` (inclusive)
    into buckets, for each requested resource."""

    def __init__(
        self,
        *,
        start_ms: int,
        end_ms: int,
        block_ms: int,
        bucket_of: BucketOf,
        resources: Sequence[Resource],
        use_statistics: bool,
        max_samples: int,
    ):
        self.start_ms, self.end_ms = start_ms, end_ms
        self.block_ms = block_ms
        self.bucket_of = bucket_of
        self.resources = tuple(resources)
        self.use_statistics = use_statistics
        self.max_samples = max_samples
        self.decoded = 0
        self.results: dict[Resource, dict[Key, Accumulator]] = {r: {} for r in self.resources}

    def _acc(self, resource: Resource, key: Key) -> Accumulator:
        table = self.results[resource]
        acc = table.get(key)
        if acc is None:
            acc = table[key] = Accumulator(exact=not self.use_statistics)
        return acc

    def _count_decoded(self, n: int) -> None:
        self.decoded += n
        if self.decoded > self.max_samples:
            raise QueryError(
                f"the query needs more than {self.max_samples} raw samples: use a step that is "
                f"a multiple of the block ({self.block_ms // 1000}s) so block statistics answer "
                "it, or narrow the time range or the filters"
            )

    def run(self, conn: Connection, series_ids: object) -> None:
        rolled = self._rolled_days(conn)
        if rolled is not None:
            self._rollups(conn, series_ids, *rolled)
        self._chunks(conn, series_ids, rolled)
        self._head(conn, series_ids)

    def _rolled_days(self, conn: Connection) -> tuple[int, int] | None:
        """The whole days inside the range that rollups answer, as [first, end), if any: each
        must lie in one bucket, and be rolled up already."""
        if not self.use_statistics:
            return None
        first = self.start_ms if self.start_ms % DAY_MS == 0 else day_of(self.start_ms) + DAY_MS
        end = day_of(self.end_ms + 1)
        mark = watermark(conn)
        if mark is None:
            return None
        end = min(end, mark)
        if end <= first:
            return None
        days = range(first, end, DAY_MS)
        if any(self.bucket_of(day) != self.bucket_of(day + DAY_MS - 1) for day in days):
            return None
        return first, end

    def _rollups(self, conn: Connection, series_ids: object, first: int, end: int) -> None:
        r = schema.rollups
        columns = [r.c.series_id, r.c.day_start_ms, r.c.first_ms, r.c.last_ms, r.c.count]
        columns.append(r.c.interval_ms)
        for resource in self.resources:
            name = resource.value
            columns += [r.c[f"{name}_{part}"] for part in ("sum", "min", "max", "last", "sketch")]
        rows = conn.execute(
            select(*columns)
            .where(r.c.series_id.in_(series_ids))  # type: ignore[arg-type]
            .where(r.c.day_start_ms >= first, r.c.day_start_ms < end)
        )
        for row in rows:
            series_id, day, first_ms, last_ms, count, interval_ms = row[:6]
            key = (series_id, self.bucket_of(day))
            for i, resource in enumerate(self.resources):
                total, low, high, last, sketch = row[6 + 5 * i : 11 + 5 * i]
                self._acc(resource, key).add_statistics(
                    count, total, low, high, first_ms, last_ms, last, sketch, interval_ms
                )

    def _whole_block_inside(self, block_start: int, payload_expired: bool) -> bool:
        block_end = block_start + self.block_ms - 1
        if self.bucket_of(block_start) != self.bucket_of(block_end):
            return False
        inside = self.start_ms <= block_start and block_end <= self.end_ms
        return inside or payload_expired

    def _chunks(self, conn: Connection, series_ids: object, rolled: tuple[int, int] | None) -> None:
        c = schema.chunks
        columns = [
            c.c.series_id,
            c.c.block_start_ms,
            c.c.first_ms,
            c.c.last_ms,
            c.c.count,
            c.c.interval_ms,
        ]
        for resource in self.resources:
            name = resource.value
            columns += [
                c.c[f"{name}_sum"],
                c.c[f"{name}_min"],
                c.c[f"{name}_max"],
                c.c[f"{name}_last"],
                c.c[f"{name}_sketch"],
            ]
        statement = (
            select(*columns, c.c.payload.is_(None).label("expired"))
            .where(c.c.series_id.in_(series_ids))  # type: ignore[arg-type]
            .where(c.c.block_start_ms > self.start_ms - self.block_ms)
            .where(c.c.block_start_ms <= self.end_ms)
            .where(c.c.last_ms >= self.start_ms, c.c.first_ms <= self.end_ms)
        )
        if rolled is not None:
            statement = statement.where(
                ~((c.c.block_start_ms >= rolled[0]) & (c.c.block_start_ms < rolled[1]))
            )
        decode_later: list[tuple[int, int]] = []
        for row in conn.execute(statement):
            series_id, block_start, first_ms, last_ms, count, interval_ms = row[:6]
            expired = row[-1]
            if self.use_statistics and self._whole_block_inside(block_start, expired):
                key = (series_id, self.bucket_of(block_start))
                for i, resource in enumerate(self.resources):
                    total, low, high, last, sketch = row[6 + 5 * i : 11 + 5 * i]
                    self._acc(resource, key).add_statistics(
                        count, total, low, high, first_ms, last_ms, last, sketch, interval_ms
                    )
            elif not expired:
                decode_later.append((series_id, block_start))
        for series_id, block_start in decode_later:
            payload = conn.execute(
                select(c.c.payload).where(
                    c.c.series_id == series_id, c.c.block_start_ms == block_start
                )
            ).scalar_one()
            samples = decode_samples(payload)
            self._count_decoded(len(samples))
            self._add_run(
                series_id,
                samples.timestamps_ms,
                {Resource.CPU: samples.cpu_nanocores, Resource.MEMORY: samples.memory_bytes},
            )

    def _head(self, conn: Connection, series_ids: object) -> None:
        h = schema.samples_head
        rows = conn.execute(
            select(h.c.series_id, h.c.ts_ms, h.c.cpu_nanocores, h.c.memory_bytes)
            .where(h.c.ts_ms >= self.start_ms, h.c.ts_ms <= self.end_ms)
            .where(h.c.series_id.in_(series_ids))  # type: ignore[arg-type]
            .order_by(h.c.series_id, h.c.ts_ms)
        )
        current: int | None = None
        timestamps: list[int] = []
        cpu: list[int] = []
        memory: list[int] = []
        for series_id, ts, cpu_value, memory_value in rows:
            if series_id == current and timestamps and timestamps[-1] == ts:
                continue  # the same sample from a second replica, until compaction dedups it
            if series_id != current:
                if current is not None:
                    self._add_run(current, timestamps, {Resource.CPU: cpu, Resource.MEMORY: memory})
                current, timestamps, cpu, memory = series_id, [], [], []
            timestamps.append(ts)
            cpu.append(cpu_value)
            memory.append(memory_value)
        if current is not None:
            self._add_run(current, timestamps, {Resource.CPU: cpu, Resource.MEMORY: memory})
        self._count_decoded(0)

    def _add_run(
        self, series_id: int, timestamps: Sequence[int], values: dict[Resource, Sequence[int]]
    ) -> None:
        """Adds time-ordered samples of one series, keeping those inside the range."""
        self._count_decoded(len(timestamps))
        groups: dict[int, list[int]] = {}
        for position, ts in enumerate(timestamps):
            if self.start_ms <= ts <= self.end_ms:
                groups.setdefault(self.bucket_of(ts), []).append(position)
        for bucket, positions in groups.items():
            stamps = [timestamps[p] for p in positions]
            for resource in self.resources:
                column = values[resource]
                self._acc(resource, (series_id, bucket)).add_values(
                    stamps, [column[p] for p in positions]
                )


def aligned(step_ms: int) -> BucketOf:
    return lambda ts: ts - ts % step_ms


def whole(start_ms: int) -> BucketOf:
    return lambda _ts: start_ms


def series_buckets(
    results: dict[Key, Accumulator],
) -> dict[int, list[tuple[int, Accumulator]]]:
    """Accumulators grouped by series, buckets in time order."""
    grouped: dict[int, list[tuple[int, Accumulator]]] = {}
    for (series_id, bucket), acc in sorted(results.items()):
        grouped.setdefault(series_id, []).append((bucket, acc))
    return grouped

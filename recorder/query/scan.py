"""Planning and gathering: which tier answers which part of a query, and the samples and
statistics of each output series ("unit") in each bucket.

A unit is one output series: a node or a container (one stored series), or a pod (its own
statistics series, made by compaction, plus its containers' samples summed at each instant).

Tiers, from coarsest:

- **rollups** answer whole UTC days that lie inside the range and inside one bucket, once they
  are rolled up (and when no head row of the query falls in them: a late sample waits there
  for compaction);
- **chunk statistics** answer a block that lies wholly inside one bucket and inside the range,
  or whose samples have expired (taken whole even where the range cuts it);
- **samples** answer the rest: chunk payloads decoded and head rows, merged under the one
  deduplication rule (``recorder.stats.dedup``), so a late duplicate reads the same before and
  after compaction. A block that has both a chunk and head rows (a late sample) is always
  decoded and merged, never taken from its statistics.

Without ``use_statistics`` every sample is decoded and percentiles are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.stats import columns, dedup
from recorder.stats.buckets import Accumulator, BucketOf, IntColumn, whole
from recorder.stats.codec import ChunkSamples, decode_arrays, decode_samples
from recorder.store import chunks, head, rollups
from recorder.store.head import SampleRow
from recorder.timeutil import DAY_MS, floor_to

Key = tuple[int, int]
"""(unit index, bucket start ms)"""

Columns = tuple[IntColumn, IntColumn, IntColumn]
"""A unit's samples as (timestamps_ms, cpu_nanocores, memory_bytes): int64 arrays or lists."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One output series: the series whose statistics answer whole blocks and days, and the
    series whose samples, summed at each instant, are its samples."""

    stats_ids: tuple[int, ...]
    sample_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Gathered:
    """What a scan found for its units' buckets: statistics records ``(series id, start,
    *names)`` with each one's unit and bucket, and each unit's decoded samples."""

    rows: list[tuple[Any, ...]]
    names: tuple[str, ...]
    units: npt.NDArray[np.int64]
    buckets: npt.NDArray[np.int64]
    runs: dict[int, ChunkSamples]


class HeadStream:
    """One walk of the head's rows in a range for the scans of many slices of units, in series
    order (``head.read``'s): each slice takes its series' rows as the walk reaches them, so the
    rows of the whole range are never held at once, and the range is walked once, not once per
    slice (the head's only index is by time). Slices must come in increasing order of their
    largest series id; rows of series up to a slice's largest that belong to a later slice (a
    pod whose containers' ids lie far apart) are kept aside for it."""

    def __init__(self, conn: Connection, series_ids: Sequence[int], start_ms: int, end_ms: int):
        self._rows = head.read(conn, series_ids, start_ms, end_ms)
        self._ahead: tuple[int, SampleRow] | None = None
        self._aside: dict[int, list[SampleRow]] = {}

    def take(self, series_ids: Collection[int]) -> Generator[tuple[int, SampleRow], None, None]:
        """The rows of ``series_ids`` (ordered by series and time within each source)."""
        wanted = set(series_ids)
        for sid in sorted(wanted & self._aside.keys()):
            for row in self._aside.pop(sid):
                yield sid, row
        if not wanted:
            return
        last = max(wanted)
        while True:
            if self._ahead is None:
                found = next(self._rows, None)
                if found is None:
                    return
                self._ahead = found
            sid, row = self._ahead
            if sid > last:
                return
            self._ahead = None
            if sid in wanted:
                yield sid, row
            else:
                self._aside.setdefault(sid, []).append(row)

    def close(self) -> None:
        self._rows.close()


class Scan:
    """Gathers the units' data between ``start_ms`` and ``end_ms`` (inclusive)."""

    def __init__(
        self,
        units: Sequence[Unit],
        *,
        start_ms: int,
        end_ms: int,
        block_ms: int,
        max_samples: int,
        points_only: bool = False,
        stepped: bool = True,
        decoded: int = 0,
        head_stream: HeadStream | None = None,
    ):
        """``points_only``: the samples are the response (no step), so ``max_samples`` is the
        response's point bound and the error says so. ``stepped``: the answer has a step (a
        history), which the error advises (a summary's or ``top``'s window has none).
        ``decoded``: samples already decoded for the same answer (by the scans of its earlier
        series), counted against the bound.
        ``head_stream``: where the head rows come from when the units are a slice of a
        larger answer (else a walk of the head of their own)."""
        self._head_stream = head_stream
        self.units = list(units)
        self.points_only = points_only
        self.stepped = stepped
        self.start_ms, self.end_ms = start_ms, end_ms
        self.block_ms = block_ms
        self.max_samples = max_samples
        self.decoded = decoded
        self._unit_of_stats = {sid: i for i, u in enumerate(self.units) for sid in u.stats_ids}
        self._unit_of_sample = {sid: i for i, u in enumerate(self.units) for sid in u.sample_ids}

    def _count(self, n: int) -> None:
        self.decoded += n
        if self.decoded > self.max_samples and self.points_only:
            raise QueryError(
                f"the query matches more than {self.max_samples} points: narrow the time range, "
                "add filters (node, namespace, pod, container, selector) or use a step"
            )
        if self.decoded > self.max_samples and self.stepped:
            raise QueryError(
                f"the query needs more than {self.max_samples} raw samples: use a step that is "
                f"a multiple of the block ({self.block_ms // 1000}s) so block statistics answer "
                "it, or narrow the time range or the filters"
            )
        if self.decoded > self.max_samples:
            raise QueryError(
                f"the query needs more than {self.max_samples} raw samples: the samples not "
                f"compacted yet (the newest block of {self.block_ms // 1000}s and after) and "
                "those of blocks the window cuts through are read one by one; end the window "
                "before the newest block, start and end it on block boundaries, narrow the "
                "filters, or raise RECORDER_MAX_SAMPLES"
            )

    # --- samples ------------------------------------------------------------------------------

    def _head(self, conn: Connection) -> dict[int, list[dedup.Row]]:
        """Head rows by series, without the late ones that fall in a block whose samples have
        expired (compaction drops them: reads agree with it before and after)."""
        rows: dict[int, list[dedup.Row]] = {}
        # Refused as soon as more rows arrive than the query may decode, not once all are held:
        # each row costs about 250 bytes here, and a window of a large cluster's head holds
        # millions (at 150,000 pods, 5 minutes: 2.4 million rows, 580 MiB). Counted before the
        # late rows below are dropped, so such rows may refuse a query a little early.
        allowed = self.max_samples - self.decoded
        read = 0
        if self._head_stream is not None:
            source: Generator[tuple[int, SampleRow], None, None] = self._head_stream.take(
                self._unit_of_sample
            )
        else:
            source = head.read(conn, list(self._unit_of_sample), self.start_ms, self.end_ms)
        with closing(source) as found:
            for series_id, row in found:
                rows.setdefault(series_id, []).append(row)
                read += 1
                if read > allowed:
                    self._count(read)  # raises
        blocks = {floor_to(r[0], self.block_ms) for found in rows.values() for r in found}
        gone = chunks.expired(conn, sorted(blocks)) if blocks else set()
        if gone:
            rows = {
                sid: kept
                for sid, found in rows.items()
                if (kept := [r for r in found if (sid, floor_to(r[0], self.block_ms)) not in gone])
            }
        self._count(sum(map(len, rows.values())))
        return rows

    def _runs(
        self,
        conn: Connection,
        head_rows: dict[int, list[dedup.Row]],
        decode: Sequence[tuple[int, int]] | None,
        decoded_blocks: set[tuple[int, int]] | None = None,
        read: Iterable[tuple[int, int, ChunkSamples]] | None = None,
    ) -> dict[int, ChunkSamples]:
        """Each unit's samples in the range: the chunks ``decode`` lists (every chunk in the
        range when None) merged with the head rows, per series by the dedup rule, then summed
        across the unit's series at each instant. Takes ``head_rows`` apart as it goes."""
        if read is not None:
            decoded = read
        elif decode is None:
            decoded = chunks.read_samples_in_range(
                conn, list(self._unit_of_sample), self.start_ms, self.end_ms, block_ms=self.block_ms
            )
        else:
            decoded = chunks.read_samples(conn, decode)
        stored: dict[int, list[tuple[int, ChunkSamples]]] = {}
        for series_id, block_start, samples in decoded:
            self._count(len(samples))
            if decoded_blocks is not None:
                decoded_blocks.add((self._unit_of_sample[series_id], block_start))
            stored.setdefault(series_id, []).append((block_start, samples))
        per_unit: dict[int, list[ChunkSamples]] = {}
        # Each series' head rows and chunks are let go once merged: they are the largest
        # part of what a raw query holds, and the merged runs share their numbers.
        for series_id in stored.keys() | head_rows.keys():
            parts = [run for _block, run in sorted(stored.pop(series_id, ()), key=_first)]
            late = head_rows.pop(series_id, None)
            if late:
                # Head rows may repeat stored instants (late samples, a second writer): the
                # one rule decides.
                everything = list(late)
                for run in parts:
                    everything.extend(dedup.rows_of(run))
                collapsed, _ = dedup.collapse(everything)
                merged = dedup.columns_of(collapsed)
            else:
                merged = dedup.concat(parts)  # distinct blocks: nothing to collapse
            inside = dedup.cut(merged, self.start_ms, self.end_ms)
            if inside.timestamps_ms:
                per_unit.setdefault(self._unit_of_sample[series_id], []).append(inside)
        return {
            unit: parts[0] if len(parts) == 1 else dedup.sum_runs(parts)
            for unit, parts in per_unit.items()
        }

    def samples(self, conn: Connection) -> dict[int, ChunkSamples]:
        """Every unit's samples in the range, from every tier that still has samples."""
        return self._runs(conn, self._head(conn), None)

    def sample_columns(self, conn: Connection) -> dict[int, Columns]:
        """``samples`` as ``(timestamps, cpu, memory)`` columns: int64 arrays decoded in one
        batch (``codec.decode_arrays``) when each unit is one series without head rows in the
        range and its values fit in 64 bits, else the lists ``samples`` makes."""
        head_rows = self._head(conn)
        stored = chunks.read_payloads_in_range(
            conn, list(self._unit_of_sample), self.start_ms, self.end_ms, block_ms=self.block_ms
        )
        arrays = None
        if not head_rows and all(len(u.sample_ids) == 1 for u in self.units):
            arrays = decode_arrays([payload for _sid, _start, payload in stored])
        if arrays is None:
            read = ((sid, start, decode_samples(payload)) for sid, start, payload in stored)
            runs = self._runs(conn, head_rows, None, read=read)
            return {u: (r.timestamps_ms, r.cpu_nanocores, r.memory_bytes) for u, r in runs.items()}
        self._count(len(arrays.timestamps_ms))
        out: dict[int, Columns] = {}
        # Chunks come by series, then block: each series' samples are one time-ordered run.
        ends = np.cumsum(arrays.counts).tolist()
        begin = 0
        for position, (series_id, _start, _payload) in enumerate(stored):
            last = position + 1 == len(stored) or stored[position + 1][0] != series_id
            if not last:
                continue
            end = ends[position]
            stamps = arrays.timestamps_ms[begin:end]
            low = begin + int(np.searchsorted(stamps, self.start_ms, "left"))
            high = begin + int(np.searchsorted(stamps, self.end_ms, "right"))
            if high > low:
                out[self._unit_of_sample[series_id]] = (
                    arrays.timestamps_ms[low:high],
                    arrays.cpu_nanocores[low:high],
                    arrays.memory_bytes[low:high],
                )
            begin = end
        return out

    # --- statistics ---------------------------------------------------------------------------

    def gather(
        self,
        conn: Connection,
        bucket_of: BucketOf,
        resources: Sequence[Resource],
        *,
        squares: bool = True,
        parts: Sequence[str] | None = None,
    ) -> Gathered:
        """What answers each unit's buckets, from the coarsest tier that answers each part:
        statistics records (rollups, whole chunks, and chunks whose samples are gone and that
        lie in one bucket) and decoded samples. Without ``squares`` the sums of squares are
        not read (``stddev`` needs them); with ``parts``, only those parts of each resource's
        statistics are read (``columns.names``; ``buckets.parts_of`` says what each
        aggregation needs)."""
        names = columns.names(squares, [r.value for r in resources], parts)
        head_rows = self._head(conn)
        head_blocks: set[tuple[int, int]] = {
            (self._unit_of_sample[sid], floor_to(row[0], self.block_ms))
            for sid, found in head_rows.items()
            for row in found
        }
        rolled = self._rolled_days(conn, bucket_of, head_blocks)
        stats_ids = list(self._unit_of_stats)
        whole_rows: list[tuple[Any, ...]] = []
        if rolled is not None:
            whole_rows = rollups.read_rows(conn, stats_ids, *rolled, names)
        chunk_rows = chunks.read_stats_rows(
            conn,
            stats_ids,
            self.start_ms,
            self.end_ms,
            names,
            block_ms=self.block_ms,
            skip=rolled,
        )
        taken, others = self._whole_blocks(chunk_rows, bucket_of, head_blocks)
        # (series id, block start, *values): the "has payload" column left out, in C.
        whole_rows += map(itemgetter(0, 1, *range(3, 3 + len(names))), taken)
        held: dict[tuple[int, int], tuple[Any, ...]] = {}
        for series_id, start, _has, *values in others:
            held[(self._unit_of_stats[series_id], start)] = (series_id, start, *values)
        wanted = [
            (sid, start) for unit, start in sorted(held) for sid in self.units[unit].sample_ids
        ]
        covered: set[tuple[int, int]] = set()
        runs = self._runs(conn, head_rows, wanted, covered)
        # Nothing decoded for a block: its samples have expired (a pod's statistics have no
        # payload of their own): the statistics answer it whole, where one bucket holds it.
        whole_rows += [
            row
            for (unit, start), row in held.items()
            if (unit, start) not in covered
            and bucket_of(start) == bucket_of(start + self.block_ms - 1)
        ]
        starts = np.fromiter(map(itemgetter(1), whole_rows), np.int64, len(whole_rows))
        return Gathered(whole_rows, names, self._units_of(whole_rows), bucket_of.many(starts), runs)

    def statistics(
        self,
        conn: Connection,
        bucket_of: BucketOf,
        resources: Sequence[Resource],
        *,
        squares: bool = True,
        parts: Sequence[str] | None = None,
    ) -> dict[Resource, dict[Key, Accumulator]]:
        """Accumulators per unit and bucket of what ``gather`` finds (its arguments)."""
        found = self.gather(conn, bucket_of, resources, squares=squares, parts=parts)
        return accumulators(found, bucket_of, resources)

    def rolled_whole(self, conn: Connection) -> bool:
        """Whether day rollups alone answer the whole range as one bucket (``statistics`` with
        ``whole(start_ms)`` would read nothing else): it is made of whole UTC days, all rolled
        up, no head row of the units falls in it, and no chunk of theirs reaches into it from
        outside."""
        if self.start_ms % DAY_MS or (self.end_ms + 1) % DAY_MS or self.end_ms < self.start_ms:
            return False
        decoded = self.decoded
        late = self._head(conn)
        self.decoded = decoded  # counted when ``statistics`` reads them
        if late:
            return False
        rolled = self._rolled_days(conn, whole(self.start_ms), set())
        if rolled != (self.start_ms, self.end_ms + 1):
            return False
        outside = chunks.read_stats_rows(
            conn,
            list(self._unit_of_stats),
            self.start_ms,
            self.end_ms,
            ("count",),
            block_ms=self.block_ms,
            skip=rolled,
        )
        return not outside

    def _units_of(self, rows: Sequence[tuple[Any, ...]]) -> npt.NDArray[np.int64]:
        unit_of = self._unit_of_stats
        return np.fromiter(map(unit_of.__getitem__, map(itemgetter(0), rows)), np.int64, len(rows))

    def _whole_blocks(
        self,
        rows: list[tuple[Any, ...]],
        bucket_of: BucketOf,
        head_blocks: set[tuple[int, int]],
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The chunk rows ``(series id, block start, has payload, ...)`` whose statistics
        answer their block whole (it lies in one bucket and inside the range, or its samples
        have expired; no head row falls in it), and the rest, to decode: those with a payload
        or whose unit's samples are other series' (a pod's). Blocks across buckets with
        neither are left out."""
        if not rows:
            return [], []
        units = self._units_of(rows)
        start = np.fromiter(map(itemgetter(1), rows), np.int64, len(rows))
        has = np.fromiter(map(bool, map(itemgetter(2), rows)), bool, len(rows))
        separate = np.array([u.stats_ids != u.sample_ids for u in self.units], bool)[units]
        last = start + self.block_ms - 1
        in_one = bucket_of.many(start) == bucket_of.many(last)
        inside = (self.start_ms <= start) & (last <= self.end_ms)
        held = np.zeros(len(rows), bool)
        if head_blocks:
            held = np.fromiter(
                (
                    (u, s) in head_blocks
                    for u, s in zip(units.tolist(), start.tolist(), strict=True)
                ),
                bool,
                len(rows),
            )
        whole = ~held & in_one & (inside | ~(has | separate))
        rest = ~whole & (held | has | separate)
        return (
            [rows[i] for i in np.flatnonzero(whole).tolist()],
            [rows[i] for i in np.flatnonzero(rest).tolist()],
        )

    def _rolled_days(
        self, conn: Connection, bucket_of: BucketOf, head_blocks: set[tuple[int, int]]
    ) -> tuple[int, int] | None:
        """The whole days inside the range that rollups answer, as [first, end), if any: each
        must lie in one bucket, be rolled up already, and hold no head row of the query."""
        first = (
            self.start_ms
            if self.start_ms % DAY_MS == 0
            else floor_to(self.start_ms, DAY_MS) + DAY_MS
        )
        end = floor_to(self.end_ms + 1, DAY_MS)
        mark = rollups.watermark(conn)
        if mark is None:
            return None
        end = min(end, mark)
        if end <= first:
            return None
        days = range(first, end, DAY_MS)
        if any(bucket_of(day) != bucket_of(day + DAY_MS - 1) for day in days):
            return None
        if any(first <= start < end for _unit, start in head_blocks):
            return None  # a late sample waits in the head: chunks and samples answer
        return first, end


def accumulators(
    found: Gathered, bucket_of: BucketOf, resources: Sequence[Resource]
) -> dict[Resource, dict[Key, Accumulator]]:
    """Accumulators per unit and bucket of what a scan gathered."""
    grouped = columns.accumulate(
        found.rows, found.names, found.units, found.buckets, [r.value for r in resources]
    )
    results: dict[Resource, dict[Key, Accumulator]] = {r: grouped[r.value] for r in resources}

    def acc(resource: Resource, key: Key) -> Accumulator:
        table = results[resource]
        got = table.get(key)
        if got is None:
            got = table[key] = Accumulator(exact=False)
        return got

    for unit, run in found.runs.items():
        add_run(results, unit, run, bucket_of, resources, acc)
    return results


def _first(item: tuple[int, ChunkSamples]) -> int:
    return item[0]


def add_run(
    results: dict[Resource, dict[Key, Accumulator]],
    unit: int,
    run: ChunkSamples,
    bucket_of: BucketOf,
    resources: Sequence[Resource],
    acc: Callable[[Resource, Key], Accumulator],
) -> None:
    """Adds a unit's time-ordered samples to its buckets' accumulators."""
    groups: dict[int, list[int]] = {}
    for position, ts in enumerate(run.timestamps_ms):
        groups.setdefault(bucket_of(ts), []).append(position)
    columns = {Resource.CPU: run.cpu_nanocores, Resource.MEMORY: run.memory_bytes}
    for bucket, positions in groups.items():
        stamps = [run.timestamps_ms[p] for p in positions]
        for resource in resources:
            column = columns[resource]
            acc(resource, (unit, bucket)).add_values(stamps, [column[p] for p in positions])

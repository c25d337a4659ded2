"""``*_over_time`` answered from the statistics tiers (day rollups, block statistics) instead
of decoding every raw sample, where that gives the raw samples' answer.

Planning which tier answers which part is ``recorder.query.scan``'s (``Scan.gather``: rollups
for whole rolled-up days, block statistics for whole blocks, decoded samples for blocks with
late head rows); this module only chooses the buckets and combines them into windows.

**When.** A window is ``[t - range, t]``, both ends included (Prometheus 2.42). When every
``t`` and the range are multiples of a bucket width ``w`` (a day, else the block), the window
is the buckets ``[t - range, t)`` (each ``[b, b + w)``, as blocks and days are) plus the
samples at exactly ``t``, which belong to the next bucket: a bucket's ``first_ms`` says whether
it starts with one, and its value is read raw (one instant per such window end). The answer
is then the raw samples' answer: counts, sums, minima, maxima and the last value are exact.

**Expired samples.** Otherwise (unaligned windows) the raw samples answer, unless some of the
range's samples have expired (only statistics are left): then the windows are rounded to the
nearest whole blocks and a warning says so. An aligned window's end sample that has expired
and cannot be told from its block's statistics is left out, with a warning.

**Quantiles.** ``quantile_over_time`` merges the buckets' sketches: within the sketch's
relative accuracy, said in a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.values import (
    SAME_LABELSET,
    BoolArray,
    FloatArray,
    IntArray,
    Labels,
    StepSeries,
    without_name,
)
from recorder.query.promql.windows import window_extremes
from recorder.query.scan import Gathered, Scan, Unit, accumulators
from recorder.stats.buckets import Accumulator, BucketOf
from recorder.stats.sketch import RELATIVE_ACCURACY, QuantileSketch
from recorder.timeutil import DAY_MS

FUNCTIONS = frozenset(
    {
        "count_over_time",
        "sum_over_time",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "last_over_time",
        "quantile_over_time",
    }
)


@dataclass(frozen=True, slots=True)
class Plan:
    """Each window as buckets ``[low, high)`` of ``width_ms`` from ``origin_ms``; ``exact``:
    the windows are aligned (their end samples are read), else rounded to whole buckets."""

    width_ms: int
    origin_ms: int
    low: IntArray
    high: IntArray
    exact: bool

    @property
    def buckets(self) -> int:
        """Buckets to read: every window's, and the one after the last (its end samples)."""
        return int(self.high.max()) + 1 if len(self.high) else 0

    @property
    def end_ms(self) -> int:
        return self.origin_ms + self.buckets * self.width_ms - 1


def aligned(ends_ms: IntArray, range_ms: int, block_ms: int) -> Plan | None:
    """The plan with the widest bucket (a day, else the block) that the window ends and the
    range are multiples of; None when neither is."""
    if range_ms <= 0 or not len(ends_ms):
        return None
    widths = (DAY_MS, block_ms) if DAY_MS % block_ms == 0 else (block_ms,)
    for width in widths:  # a day bucket must hold whole blocks
        if range_ms % width == 0 and not (ends_ms % width).any():
            origin = int(ends_ms.min()) - range_ms
            low = (ends_ms - range_ms - origin) // width
            return Plan(width, origin, low, low + range_ms // width, exact=True)
    return None


def rounded(ends_ms: IntArray, range_ms: int, block_ms: int) -> Plan:
    """Each window rounded to the nearest block boundaries (at least one block)."""
    origin = int(ends_ms.min()) - range_ms
    origin -= origin % block_ms
    half = block_ms // 2
    low = (ends_ms - range_ms - origin + half) // block_ms
    high = np.maximum((ends_ms - origin + half) // block_ms, low + 1)
    return Plan(block_ms, origin, low, high, exact=False)


_SAFE = 2**62
MAX_CELLS = 2_000_000
"""The most series x buckets one read may hold (seven int64 grids: about 110 MB)."""


@dataclass(frozen=True, slots=True, eq=False)
class Grid:
    """One resource's statistics of each unit (row) in each bucket (column): what every
    tier answered, merged: counts, sums, extremes, first timestamp and last value."""

    count: IntArray
    total: IntArray
    minimum: IntArray
    maximum: IntArray
    first_ms: IntArray
    last: IntArray

    @classmethod
    def of(cls, found: Gathered, resource: Resource, plan: Plan, units: int) -> Grid:
        shape = (units, plan.buckets)
        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        count = np.zeros(shape, np.int64)
        total = np.zeros(shape, np.int64)
        minimum, maximum = np.full(shape, big, np.int64), np.full(shape, small, np.int64)
        first_ms = np.full(shape, big, np.int64)
        last_ms, last = np.full(shape, small, np.int64), np.zeros(shape, np.int64)
        at = {name: i + 2 for i, name in enumerate(found.names)}
        r = resource.value
        parts: list[tuple[IntArray, IntArray, list[IntArray]]] = []
        if found.rows:
            cols = list(zip(*found.rows, strict=True))
            column = [
                np.array(cols[at[name]], np.int64)
                for name in ("count", f"{r}_sum", f"{r}_min", f"{r}_max", "first_ms")
            ]
            column += [np.array(cols[at["last_ms"]], np.int64)]
            column += [np.array(cols[at[f"{r}_last"]], np.int64)]
            buckets = (found.buckets - plan.origin_ms) // plan.width_ms
            parts.append((found.units, buckets, column))
        for unit, run in found.runs.items():
            stamps = np.array(run.timestamps_ms, np.int64)
            values = np.array(
                run.cpu_nanocores if resource is Resource.CPU else run.memory_bytes, np.int64
            )
            ones = np.ones(len(stamps), np.int64)
            buckets = (stamps - plan.origin_ms) // plan.width_ms
            units_of = np.full(len(stamps), unit, np.int64)
            parts.append(
                (units_of, buckets, [ones, values, values, values, stamps, stamps, values])
            )
        for units_of, buckets, (n, s, lo, hi, first, end, final) in parts:
            where = (units_of, buckets)
            np.add.at(count, where, n)
            np.add.at(total, where, s)
            np.minimum.at(minimum, where, lo)
            np.maximum.at(maximum, where, hi)
            np.minimum.at(first_ms, where, first)
            order = np.lexsort((end, buckets, units_of))
            keys = units_of[order] * plan.buckets + buckets[order]
            tail = np.flatnonzero(np.append(keys[1:] != keys[:-1], True))
            chosen = order[tail]
            u, b = units_of[chosen], buckets[chosen]
            newer = end[chosen] > last_ms[u, b]
            last_ms[u[newer], b[newer]] = end[chosen][newer]
            last[u[newer], b[newer]] = final[chosen][newer]
        return cls(count, total, minimum, maximum, first_ms, last)


def check_cells(series: int, plan: Plan) -> None:
    """``QueryError`` when ``series`` x the plan's buckets are more than ``MAX_CELLS``."""
    if series * plan.buckets > MAX_CELLS:
        raise QueryError(
            f"the query would read {series} series x {plan.buckets} buckets of statistics, "
            f"more than {MAX_CELLS}: use a shorter [range] or time range, or fewer series"
        )


@dataclass(frozen=True, slots=True)
class Wanted:
    """One series to answer: its stored id, output labels, resource and scale."""

    series_id: int
    labels: Labels
    resource: Resource
    scale: float


@dataclass(frozen=True, slots=True)
class Answer:
    series: tuple[StepSeries, ...]
    warnings: tuple[str, ...]
    decoded: int


def over_time(
    conn: Connection,
    name: str,
    wanted: Sequence[Wanted],
    plan: Plan,
    q: FloatArray | None,
    *,
    block_ms: int,
    max_samples: int,
) -> Answer:
    """``name`` of every wanted series' windows, from the tiers (see the module's text)."""
    ids = sorted({w.series_id for w in wanted})
    unit_of = {sid: index for index, sid in enumerate(ids)}
    resources = sorted({w.resource for w in wanted}, key=lambda r: r.value)
    scan = Scan(
        [Unit((sid,), (sid,)) for sid in ids],
        start_ms=plan.origin_ms,
        end_ms=plan.end_ms,
        block_ms=block_ms,
        max_samples=max_samples,
    )
    bucket_of = BucketOf(plan.width_ms)
    parts = None if name == "quantile_over_time" else ("sum", "min", "max", "last")
    found = scan.gather(conn, bucket_of, resources, squares=False, parts=parts)
    grids = {r: Grid.of(found, r, plan, len(ids)) for r in resources}
    accs = accumulators(found, bucket_of, resources) if name == "quantile_over_time" else {}
    warnings: list[str] = []
    ends = plan.origin_ms + plan.high * plan.width_ms
    edges: dict[tuple[int, Resource], dict[int, int]] = {}
    if plan.exact:
        edges, missing = _edge_samples(conn, grids, plan, ids, block_ms, max_samples, scan)
        if missing:
            warnings.append(
                "raw samples have expired: a window's end sample that its block's statistics "
                "cannot give was left out"
            )
    else:
        warnings.append(
            f"raw samples have expired in this range: windows were rounded to whole "
            f"{plan.width_ms // 1000}s blocks of statistics"
        )
    if name == "quantile_over_time":
        warnings.append(
            f"quantile_over_time was answered from quantile sketches, within "
            f"{RELATIVE_ACCURACY:.0%} relative error"
        )
    out = []
    for one in wanted:
        unit = unit_of[one.series_id]
        sketches: list[Accumulator | None] = []
        if accs:
            table = accs[one.resource]
            sketches = [
                table.get((unit, plan.origin_ms + i * plan.width_ms)) for i in range(plan.buckets)
            ]
        edge = edges.get((unit, one.resource), {})
        grid = grids[one.resource]
        values, present = _windows(name, grid, unit, sketches, plan, ends, edge, one.scale, q)
        if present.any():
            labels = one.labels if name == "last_over_time" else without_name(one.labels)
            out.append(StepSeries(labels, np.where(present, values, 0.0), present))
    if len({s.labels for s in out}) < len(out):
        raise ExecutionError(SAME_LABELSET)
    return Answer(tuple(out), tuple(warnings), scan.decoded)


def _edge_samples(
    conn: Connection,
    grids: dict[Resource, Grid],
    plan: Plan,
    ids: Sequence[int],
    block_ms: int,
    max_samples: int,
    scan: Scan,
) -> tuple[dict[tuple[int, Resource], dict[int, int]], bool]:
    """The value at each window end ``t`` of the units whose bucket ``[t, t + w)`` starts with
    a sample: from the bucket's statistics when they tell it (one sample, or min = max), else
    read raw at ``t``. Also whether one could not be read (its samples expired)."""
    out: dict[tuple[int, Resource], dict[int, int]] = {}
    raw: dict[int, set[int]] = {}
    wanted_buckets = np.unique(plan.high)
    for resource, grid in grids.items():
        starts = plan.origin_ms + wanted_buckets * plan.width_ms
        hit = (grid.count[:, wanted_buckets] > 0) & (grid.first_ms[:, wanted_buckets] == starts)
        for unit, column in zip(*np.nonzero(hit), strict=True):
            u, k = int(unit), int(wanted_buckets[column])
            at = plan.origin_ms + k * plan.width_ms
            if grid.count[u, k] == 1 or grid.minimum[u, k] == grid.maximum[u, k]:
                out.setdefault((u, resource), {})[at] = int(grid.minimum[u, k])
            else:
                raw.setdefault(at, set()).add(u)
    missing = False
    for at, units in sorted(raw.items()):
        chosen = sorted(units)
        one = Scan(
            [Unit((ids[u],), (ids[u],)) for u in chosen],
            start_ms=at,
            end_ms=at,
            block_ms=block_ms,
            max_samples=max(max_samples - scan.decoded, 0),
        )
        runs = one.samples(conn)
        scan.decoded += one.decoded
        for position, unit in enumerate(chosen):
            run = runs.get(position)
            for resource in grids:
                if (unit, resource) in out and at in out[(unit, resource)]:
                    continue
                if run is None or not run.timestamps_ms:
                    missing = True
                    continue
                column = run.cpu_nanocores if resource is Resource.CPU else run.memory_bytes
                out.setdefault((unit, resource), {})[at] = column[0]
    return out, missing


def _windows(
    name: str,
    grid: Grid,
    unit: int,
    sketches: list[Accumulator | None],
    plan: Plan,
    ends_ms: IntArray,
    edge: dict[int, int],
    scale: float,
    q: FloatArray | None,
) -> tuple[FloatArray, BoolArray]:
    """The function's value in each window, and whether the window holds a sample."""
    n = plan.buckets
    low, high = plan.low, plan.high
    counts = grid.count[unit]
    at_end = np.array([t in edge for t in ends_ms.tolist()], bool)
    end_values = [edge.get(t, 0) for t in ends_ms.tolist()]
    prefix_counts = np.concatenate(([0], np.cumsum(counts)))
    count = prefix_counts[high] - prefix_counts[low] + at_end
    present = count > 0
    if name == "count_over_time":
        return count.astype(np.float64), present
    if name in ("sum_over_time", "avg_over_time"):
        row = grid.total[unit]
        if row.dtype == object or int(np.abs(row).max(initial=0)) * (n + 1) >= _SAFE:
            row = row.astype(object)  # Python integers: exact at any size
        totals = np.concatenate((np.zeros(1, row.dtype), np.cumsum(row)))
        sums = (totals[high] - totals[low] + np.array(end_values, row.dtype)).tolist()
        scaled = np.array([v / scale if scale != 1.0 else float(v) for v in sums], np.float64)
        if name == "sum_over_time":
            return scaled, present
        with np.errstate(divide="ignore", invalid="ignore"):
            return scaled / np.maximum(count, 1), present
    if name in ("min_over_time", "max_over_time"):
        smallest = name == "min_over_time"
        empty = math.inf if smallest else -math.inf
        extreme = (grid.minimum if smallest else grid.maximum)[unit]
        values = np.where(counts > 0, extreme / scale, empty)
        pick = np.minimum if smallest else np.maximum
        inside = window_extremes(values, low, high, pick) if n else np.full(len(low), empty)
        inside = np.where(high > low, inside, empty)
        ends = np.where(at_end, np.array(end_values, np.float64) / scale, empty)
        return pick(inside, ends), present
    if name == "last_over_time":
        index = np.where(counts > 0, np.arange(n), -1)
        latest = np.maximum.accumulate(index) if n else index
        lasts = grid.last[unit] / scale
        chosen = latest[np.maximum(high - 1, 0)]
        values = np.where(chosen >= 0, lasts[np.maximum(chosen, 0)], 0.0)
        return np.where(at_end, np.array(end_values, np.float64) / scale, values), present
    assert name == "quantile_over_time" and q is not None
    out = np.full(len(low), math.nan)
    for i, (lo, h) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        wanted = float(q[i])
        if not present[i] or math.isnan(wanted):
            continue
        if wanted < 0 or wanted > 1:
            out[i] = -math.inf if wanted < 0 else math.inf
            continue
        sketch = QuantileSketch()
        for a in sketches[lo:h]:
            if a is not None and a.count:
                sketch.merge(a.merged_sketch())
        if at_end[i]:
            sketch.add(end_values[i])
        out[i] = sketch.quantile(wanted) / scale
    return out, present

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
from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.values import (
    SAME_LABELSET,
    FloatArray,
    IntArray,
    Labels,
    StepSeries,
    without_name,
)
from recorder.query.promql.windows import window_extremes
from recorder.query.scan import Scan, Unit, accumulators
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
    for width in (DAY_MS, block_ms):
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
    accs = accumulators(found, bucket_of, resources)
    warnings: list[str] = []
    ends = plan.origin_ms + plan.high * plan.width_ms
    edges: dict[tuple[int, Resource], dict[int, int]] = {}
    if plan.exact:
        edges, missing = _edge_samples(conn, accs, plan, ids, block_ms, max_samples, scan)
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
        table = accs[one.resource]
        row = [table.get((unit, plan.origin_ms + i * plan.width_ms)) for i in range(plan.buckets)]
        edge = edges.get((unit, one.resource), {})
        values, present = _windows(name, row, plan, ends, edge, one.scale, q)
        if present.any():
            labels = one.labels if name == "last_over_time" else without_name(one.labels)
            out.append(StepSeries(labels, np.where(present, values, 0.0), present))
    if len({s.labels for s in out}) < len(out):
        raise ExecutionError(SAME_LABELSET)
    return Answer(tuple(out), tuple(warnings), scan.decoded)


def _edge_samples(
    conn: Connection,
    accs: dict[Resource, dict[tuple[int, int], Accumulator]],
    plan: Plan,
    ids: Sequence[int],
    block_ms: int,
    max_samples: int,
    scan: Scan,
) -> tuple[dict[tuple[int, Resource], dict[int, int]], bool]:
    """The value at each window end ``t`` of the units whose bucket ``[t, t + w)`` starts with
    a sample: from the bucket's statistics when they tell it (one sample, or min = max), else
    read raw at ``t``. Also whether one could not be read (its samples expired)."""
    ends = {plan.origin_ms + int(h) * plan.width_ms for h in plan.high.tolist()}
    out: dict[tuple[int, Resource], dict[int, int]] = {}
    raw: dict[int, set[int]] = {}
    for resource, table in accs.items():
        for (unit, start), acc in table.items():
            if start not in ends or acc.count == 0 or acc.first_ms != start:
                continue
            if acc.count == 1 or acc.minimum == acc.maximum:
                out.setdefault((unit, resource), {})[start] = acc.minimum
            else:
                raw.setdefault(start, set()).add(unit)
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
            for resource in accs:
                if (unit, at) not in accs[resource]:
                    continue
                if run is None or not run.timestamps_ms:
                    missing = True
                    continue
                column = run.cpu_nanocores if resource is Resource.CPU else run.memory_bytes
                out.setdefault((unit, resource), {})[at] = column[0]
    return out, missing


def _windows(
    name: str,
    row: list[Accumulator | None],
    plan: Plan,
    ends_ms: IntArray,
    edge: dict[int, int],
    scale: float,
    q: FloatArray | None,
) -> tuple[FloatArray, np.ndarray]:
    """The function's value in each window, and whether the window holds a sample."""
    n = len(row)
    low, high = plan.low, plan.high
    counts = np.array([a.count if a is not None else 0 for a in row], np.int64)
    at_end = np.array([edge.get(int(t)) is not None for t in ends_ms.tolist()], bool)
    end_values = [edge.get(int(t), 0) for t in ends_ms.tolist()]
    prefix_counts = np.concatenate(([0], np.cumsum(counts)))
    count = prefix_counts[high] - prefix_counts[low] + at_end
    present = count > 0
    if name == "count_over_time":
        return count.astype(np.float64), present
    if name in ("sum_over_time", "avg_over_time"):
        totals = [0]
        for a in row:
            totals.append(totals[-1] + (a.total if a is not None else 0))
        sums = [
            totals[h] - totals[lo] + e
            for lo, h, e in zip(low.tolist(), high.tolist(), end_values, strict=True)
        ]
        scaled = np.array([s / scale if scale != 1.0 else float(s) for s in sums], np.float64)
        if name == "sum_over_time":
            return scaled, present
        with np.errstate(divide="ignore", invalid="ignore"):
            return scaled / np.maximum(count, 1), present
    if name in ("min_over_time", "max_over_time"):
        smallest = name == "min_over_time"
        empty = math.inf if smallest else -math.inf
        values = np.array(
            [
                (a.minimum if smallest else a.maximum) / scale
                if a is not None and a.count
                else empty
                for a in row
            ],
            np.float64,
        )
        pick = np.minimum if smallest else np.maximum
        inside = window_extremes(values, low, high, pick) if n else np.full(len(low), empty)
        inside = np.where(high > low, inside, empty)
        ends = np.where(at_end, np.array(end_values, np.float64) / scale, empty)
        return pick(inside, ends), present
    if name == "last_over_time":
        index = np.where(counts > 0, np.arange(n), -1)
        latest = np.maximum.accumulate(index) if n else index
        lasts = np.array([a.last / scale if a is not None else 0.0 for a in row], np.float64)
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
        for a in row[lo:h]:
            if a is not None and a.count:
                sketch.merge(a.merged_sketch())
        if at_end[i]:
            sketch.add(end_values[i])
        out[i] = sketch.quantile(wanted) / scale
    return out, present

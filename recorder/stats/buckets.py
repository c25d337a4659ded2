"""Bucketing and aggregation: samples and block statistics of one series (or one pod) in one
time bucket, accumulated into what every aggregation needs.

An :class:`Accumulator` takes raw samples (``add_values``) and whole blocks' statistics
(``add_stats``) alike. An exact accumulator keeps raw values, so its percentiles are exact (the
rank rule of ``sketch.exact_quantile``); otherwise values go into a quantile sketch merged with
the blocks' sketches (relative error ``sketch.RELATIVE_ACCURACY``). avg, min, max, sum, count,
last and stddev are exact either way.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from recorder.domain import Agg, Value
from recorder.errors import QueryError
from recorder.stats.block import ResourceStats, smallest_gap
from recorder.stats.quantiles import merged_quantiles
from recorder.stats.sketch import QuantileSketch, exact_quantile

IntColumn = Sequence[int] | npt.NDArray[np.int64]
"""Integers in a list or an int64 array."""


class BucketOf:
    """A timestamp's bucket start: ``bucket_of(ts)``, or of many at once (``many``)."""

    __slots__ = ("start_ms", "step_ms")

    def __init__(self, step_ms: int | None, start_ms: int = 0) -> None:
        self.step_ms, self.start_ms = step_ms, start_ms

    def __call__(self, ts: int) -> int:
        step = self.step_ms
        return self.start_ms if step is None else ts - ts % step

    def many(self, stamps: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        step = self.step_ms
        if step is None:
            return np.full(len(stamps), self.start_ms, np.int64)
        return stamps - stamps % step


def aligned(step_ms: int) -> BucketOf:
    """Buckets of ``step_ms`` aligned to multiples of it since the epoch."""
    return BucketOf(step_ms)


def whole(start_ms: int) -> BucketOf:
    """One bucket for the whole range, starting at ``start_ms``."""
    return BucketOf(None, start_ms)


@dataclass(slots=True)
class Accumulator:
    """Everything the aggregations need about the samples of one series in one bucket."""

    exact: bool
    count: int = 0
    total: int = 0
    squares: int | None = 0
    """Sum of squared values; None once a block without it was added."""
    minimum: int = 0
    maximum: int = 0
    first_ms: int = 0
    last_ms: int = -1
    last: int = 0
    interval_ms: int = 0
    """Smallest gap between consecutive samples seen (the resolution); 0: unknown."""
    values: list[int] = field(default_factory=list)
    sketch: QuantileSketch | None = None
    pending: list[bytes] = field(default_factory=list)
    """Serialized sketches of added blocks not merged into ``sketch`` yet: merged when a
    quantile is asked for (one at a time, or many accumulators at once by ``quantiles``), so
    avg, max... never decode a sketch. Values added later merge them first (same order)."""

    def _extend(self, count: int, low: int, high: int, first_ms: int) -> None:
        if self.count == 0:
            self.minimum, self.maximum, self.first_ms = low, high, first_ms
        else:
            self.minimum = min(self.minimum, low)
            self.maximum = max(self.maximum, high)
            self.first_ms = min(self.first_ms, first_ms)
        self.count += count

    def add_values(self, timestamps: Sequence[int], values: Sequence[int]) -> None:
        """Time-ordered samples (no timestamp already added)."""
        if not values:
            return
        empty = self.count == 0  # last_ms's -1 is no timestamp (samples may precede 1970)
        self._extend(len(values), min(values), max(values), timestamps[0])
        self.total += sum(values)
        if self.squares is not None:
            self.squares += sum(v * v for v in values)
        if empty or timestamps[-1] > self.last_ms:
            self.last_ms, self.last = timestamps[-1], values[-1]
        self._note_interval(smallest_gap(timestamps))
        if self.exact:
            self.values.extend(values)
        else:
            self._merged().add_many(values)

    def add_stats(
        self, stats: ResourceStats, *, count: int, first_ms: int, last_ms: int, interval_ms: int
    ) -> None:
        """A whole block's statistics of this accumulator's resource (an inexact accumulator
        only: its samples are not at hand)."""
        empty = self.count == 0
        self._extend(count, stats.minimum, stats.maximum, first_ms)
        self.total += stats.total
        if self.squares is not None and stats.squares is not None:
            self.squares += stats.squares
        else:
            self.squares = None
        if empty or last_ms > self.last_ms:
            self.last_ms, self.last = last_ms, stats.last
        self._note_interval(interval_ms)
        self.pending.append(stats.sketch)

    def _note_interval(self, interval_ms: int) -> None:
        if interval_ms > 0 and (self.interval_ms == 0 or interval_ms < self.interval_ms):
            self.interval_ms = interval_ms

    def _merged(self) -> QuantileSketch:
        if self.sketch is None:
            self.sketch = QuantileSketch()
        for blob in self.pending:
            self.sketch.merge_bytes(blob)
        self.pending.clear()
        return self.sketch

    def quantile(self, q: float) -> float:
        if self.exact:
            return exact_quantile(self.values, q)
        return self._merged().quantile(q)

    def merged_sketch(self) -> QuantileSketch:
        """A sketch of every value added: this accumulator's own (merge it into another, do
        not change it), or one made of its exact values."""
        if self.exact:
            return QuantileSketch.of(self.values)
        return self._merged()

    def sketch_parts(self) -> list[bytes]:
        """Serialized sketches whose merge, in this order, is ``merged_sketch()``."""
        if self.exact:
            return [QuantileSketch.of(self.values).to_bytes()]
        own = [self.sketch.to_bytes()] if self.sketch is not None else []
        return own + self.pending if own or self.pending else [QuantileSketch().to_bytes()]

    def stddev(self) -> float:
        """The population standard deviation, from exact sums."""
        if self.squares is None:
            raise QueryError(
                "stddev is not available for blocks compacted before sums of squares were kept "
                "(and whose samples have expired): choose a later range or another aggregation"
            )
        n = self.count
        variance = Fraction(n * self.squares - self.total * self.total, n * n)
        return math.sqrt(variance)


def quantiles(accs: Sequence[Accumulator], q: float) -> list[float]:
    """``[acc.quantile(q) for acc in accs]``, the inexact ones' sketches merged in batches."""
    out: list[float | None] = [acc.quantile(q) if acc.exact else None for acc in accs]
    inexact = [i for i, acc in enumerate(accs) if not acc.exact]
    found = merged_quantiles([accs[i].sketch_parts() for i in inexact], q)
    for i, value in zip(inexact, found, strict=True):
        out[i] = value
    return [value for value in out if value is not None]


PARTS: dict[Agg, tuple[str, ...]] = {
    Agg.AVG: ("sum",),
    Agg.MIN: ("min",),
    Agg.MAX: ("max",),
    Agg.SUM: ("sum",),
    Agg.COUNT: (),
    Agg.LAST: ("last",),
    Agg.STDDEV: ("sum", "sumsq"),
}
"""The stored parts of a resource's statistics (``block.RESOURCE_PARTS``) each aggregation
reads, besides the record's own fields; a percentile reads the sketch."""


def parts_of(agg: Agg) -> tuple[str, ...]:
    """The resource parts ``aggregate(acc, agg)`` needs of the statistics records."""
    return ("sketch",) if agg.quantile is not None else PARTS[agg]


def aggregate_many(accs: Sequence[Accumulator], agg: Agg) -> list[Value]:
    """``[aggregate(acc, agg) for acc in accs]``, percentiles in batches (``quantiles``)."""
    q = agg.quantile
    if q is not None:
        return list(quantiles(accs, q))
    if agg is Agg.AVG:
        return [Fraction(acc.total, acc.count) for acc in accs]
    if agg is Agg.MAX:
        return [acc.maximum for acc in accs]
    if agg is Agg.MIN:
        return [acc.minimum for acc in accs]
    return [aggregate(acc, agg) for acc in accs]


def bucketed(
    timestamps_ms: IntColumn, values: IntColumn, step_ms: int, agg: Agg
) -> list[tuple[int, Value]]:
    """Time-ordered samples (distinct timestamps) aggregated per bucket of ``step_ms``
    (``aligned``): ``(bucket start, aggregate(acc, agg))`` of each bucket's exact accumulator,
    in bucket order, computed over the whole run with numpy. ``stddev`` and values beyond
    64 bits take the accumulator path; sums that could pass 64 bits are added in Python."""
    if not len(values):
        return []
    try:
        column = np.asarray(values, np.int64)
    except OverflowError:
        column = None
    if column is None or agg is Agg.STDDEV:
        return _bucketed_one_by_one(_listed(timestamps_ms), _listed(values), step_ms, agg)
    stamps = np.asarray(timestamps_ms, np.int64)
    buckets = stamps - stamps % step_ms
    starts = np.flatnonzero(np.concatenate(([True], buckets[1:] != buckets[:-1])))
    ends = np.append(starts[1:], len(column))
    counts = ends - starts
    keys = buckets[starts].tolist()
    found: list[Value]
    q = agg.quantile
    if q is not None:
        # Each bucket's values sorted (a stable sort by bucket, then value), the rank's value.
        ordered = column[np.lexsort((column, np.repeat(np.arange(len(starts)), counts)))]
        rank = np.floor(q * (counts - 1).astype(np.float64)).astype(np.int64)
        found = [float(v) for v in ordered[starts + rank].tolist()]
    elif agg is Agg.MIN:
        found = np.minimum.reduceat(column, starts).tolist()
    elif agg is Agg.MAX:
        found = np.maximum.reduceat(column, starts).tolist()
    elif agg is Agg.COUNT:
        found = counts.tolist()
    elif agg is Agg.LAST:
        found = column[ends - 1].tolist()
    else:
        largest = max(int(column.max()), -int(column.min()))
        if largest * int(counts.max()) < 2**63:
            totals = np.add.reduceat(column, starts).tolist()
        else:
            listed = column.tolist()
            totals = [sum(listed[b:e]) for b, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        if agg is Agg.SUM:
            found = totals
        else:
            found = [Fraction(t, n) for t, n in zip(totals, counts.tolist(), strict=True)]
    return list(zip(keys, found, strict=True))


def _listed(column: IntColumn) -> list[int]:
    """Python integers (sums and products of them never wrap)."""
    found: list[int] = column.tolist() if isinstance(column, np.ndarray) else list(column)
    return found


def _bucketed_one_by_one(
    timestamps_ms: Sequence[int], values: Sequence[int], step_ms: int, agg: Agg
) -> list[tuple[int, Value]]:
    """``bucketed`` with one exact accumulator per bucket (each bucket's slice added at once)."""
    out: list[tuple[int, Value]] = []
    begin = 0
    while begin < len(timestamps_ms):
        bucket = timestamps_ms[begin] - timestamps_ms[begin] % step_ms
        end = bisect_left(timestamps_ms, bucket + step_ms, begin)
        acc = Accumulator(exact=True)
        acc.add_values(timestamps_ms[begin:end], values[begin:end])
        out.append((bucket, aggregate(acc, agg)))
        begin = end
    return out


def aggregate(acc: Accumulator, agg: Agg) -> Value:
    """One bucket's value for ``agg``: exact integers, an exact Fraction for ``avg``, a float
    for ``stddev`` and percentiles."""
    q = agg.quantile
    if q is not None:
        return acc.quantile(q)
    if agg is Agg.AVG:
        return Fraction(acc.total, acc.count)
    if agg is Agg.STDDEV:
        return acc.stddev()
    return {
        Agg.MIN: acc.minimum,
        Agg.MAX: acc.maximum,
        Agg.SUM: acc.total,
        Agg.COUNT: acc.count,
        Agg.LAST: acc.last,
    }[agg]

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from recorder.domain import Agg, Value
from recorder.errors import QueryError
from recorder.stats.block import ResourceStats, smallest_gap
from recorder.stats.sketch import QuantileSketch, exact_quantile

BucketOf = Callable[[int], int]
"""A timestamp's bucket start."""


def aligned(step_ms: int) -> BucketOf:
    """Buckets of ``step_ms`` aligned to multiples of it since the epoch."""
    return lambda ts: ts - ts % step_ms


def whole(start_ms: int) -> BucketOf:
    """One bucket for the whole range, starting at ``start_ms``."""
    return lambda _ts: start_ms


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
        self._extend(len(values), min(values), max(values), timestamps[0])
        self.total += sum(values)
        if self.squares is not None:
            self.squares += sum(v * v for v in values)
        if timestamps[-1] > self.last_ms:
            self.last_ms, self.last = timestamps[-1], values[-1]
        self._note_interval(smallest_gap(timestamps))
        if self.exact:
            self.values.extend(values)
        else:
            if self.sketch is None:
                self.sketch = QuantileSketch()
            self.sketch.add_many(values)

    def add_stats(
        self, stats: ResourceStats, *, count: int, first_ms: int, last_ms: int, interval_ms: int
    ) -> None:
        """A whole block's statistics of this accumulator's resource (an inexact accumulator
        only: its samples are not at hand)."""
        self._extend(count, stats.minimum, stats.maximum, first_ms)
        self.total += stats.total
        if self.squares is not None and stats.squares is not None:
            self.squares += stats.squares
        else:
            self.squares = None
        if last_ms > self.last_ms:
            self.last_ms, self.last = last_ms, stats.last
        self._note_interval(interval_ms)
        if self.sketch is None:
            self.sketch = QuantileSketch()
        self.sketch.merge_bytes(stats.sketch)

    def _note_interval(self, interval_ms: int) -> None:
        if interval_ms > 0 and (self.interval_ms == 0 or interval_ms < self.interval_ms):
            self.interval_ms = interval_ms

    def quantile(self, q: float) -> float:
        if self.exact:
            return exact_quantile(self.values, q)
        assert self.sketch is not None
        return self.sketch.quantile(q)

    def merged_sketch(self) -> QuantileSketch:
        """A sketch of every value added: this accumulator's own (merge it into another, do
        not change it), or one made of its exact values."""
        if self.exact or self.sketch is None:
            return QuantileSketch.of(self.values)
        return self.sketch

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

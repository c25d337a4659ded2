"""The ``*_over_time`` functions: each step's window of a range selector reduced to one value.

A window is ``[end - range, end]``, both ends included (Prometheus 2.x; 3.x leaves the start
out). Sums are exact sums of the stored integers (then scaled), so they do not depend on how
many samples came before the window; minima and maxima use a sparse table (any window in two
look-ups); quantiles sort each window. The value is Prometheus' ``quantile`` (the weighted
average of the two nearest ranks, ``-Inf``/``+Inf`` outside ``[0, 1]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.values import (
    SAME_LABELSET,
    BoolArray,
    FloatArray,
    IntArray,
    RangeValue,
    RawSeries,
    StepSeries,
    without_name,
)

_SAFE_INT_SUM = 2**62


def bounds(series: RawSeries, ends_ms: IntArray, range_ms: int) -> tuple[IntArray, IntArray]:
    """Each step's window as ``[low, high)`` positions in ``series``."""
    stamps = series.timestamps_ms
    low = np.searchsorted(stamps, ends_ms - range_ms, "left").astype(np.int64)
    high = np.searchsorted(stamps, ends_ms, "right").astype(np.int64)
    return low, high


def window_sums(series: RawSeries, low: IntArray, high: IntArray) -> FloatArray:
    ints = series.ints
    if len(ints) and int(np.abs(ints).max()) * len(ints) < _SAFE_INT_SUM:
        totals = np.concatenate(([0], np.cumsum(ints)))
        sums = totals[high] - totals[low]
        return sums / series.scale if series.scale != 1.0 else sums.astype(np.float64)
    values = series.values
    return np.array(
        [math.fsum(values[a:b]) for a, b in zip(low.tolist(), high.tolist(), strict=True)],
        np.float64,
    )


def window_extremes(
    values: FloatArray, low: IntArray, high: IntArray, pick: Callable[..., FloatArray]
) -> FloatArray:
    """``pick`` (``np.minimum`` or ``np.maximum``) over each non-empty window ``[low, high)``
    (empty windows give an arbitrary value)."""
    length = np.maximum(high - low, 1)
    longest = int(length.max()) if len(length) else 1
    table = [values]
    span = 1
    while span * 2 <= longest:
        previous = table[-1]
        table.append(pick(previous[:-span], previous[span:]))
        span *= 2
    level = np.floor(np.log2(length)).astype(np.int64)
    out = np.zeros(len(low), np.float64)
    if not len(values):
        return out
    for k in np.unique(level).tolist():
        at = level == k
        row = table[k]
        first = np.minimum(low[at], len(row) - 1)
        second = np.clip(high[at] - (1 << k), 0, len(row) - 1)
        out[at] = pick(row[first], row[second])
    return out


def quantile(q: float, values: FloatArray) -> float:
    """Prometheus' ``quantile`` of some values (NaN sorts first, as in its heap)."""
    n = len(values)
    if n == 0 or math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    nan = np.isnan(values)
    ordered = np.concatenate((values[nan], np.sort(values[~nan])))
    rank = q * (n - 1)
    lower = max(0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def over_time(name: str, matrix: RangeValue, q: FloatArray | None = None) -> list[StepSeries]:
    """``name`` (``avg_over_time`` ...) of every series of ``matrix``: the metric name is
    dropped except by ``last_over_time``; series without a sample in any window are left
    out; two results with the same labels fail as in Prometheus."""
    out = []
    for series in matrix.series:
        low, high = bounds(series, matrix.ends_ms, matrix.range_ms)
        count = high - low
        present: BoolArray = count > 0
        if not present.any():
            continue
        values = _reduced(name, series, low, high, count, present, q)
        labels = series.labels if name == "last_over_time" else without_name(series.labels)
        out.append(StepSeries(labels, np.where(present, values, 0.0), present))
    if len({s.labels for s in out}) < len(out):
        raise ExecutionError(SAME_LABELSET)
    return out


def _reduced(
    name: str,
    series: RawSeries,
    low: IntArray,
    high: IntArray,
    count: IntArray,
    present: BoolArray,
    q: FloatArray | None,
) -> FloatArray:
    if name == "count_over_time":
        return count.astype(np.float64)
    if name == "sum_over_time":
        return window_sums(series, low, high)
    if name == "avg_over_time":
        with np.errstate(divide="ignore", invalid="ignore"):
            return window_sums(series, low, high) / np.maximum(count, 1)
    values = series.values
    if name == "last_over_time":
        return values[np.maximum(high - 1, 0)] if len(values) else np.zeros(len(low))
    if name == "min_over_time":
        return window_extremes(values, low, high, np.minimum)
    if name == "max_over_time":
        return window_extremes(values, low, high, np.maximum)
    assert name == "quantile_over_time" and q is not None
    return window_quantiles(values, low, high, q)


_BATCH_VALUES = 2_000_000
"""How many values ``window_quantiles`` sorts at once (16 MB)."""


def window_quantiles(
    values: FloatArray, low: IntArray, high: IntArray, q: FloatArray
) -> FloatArray:
    """``quantile(q[i], values[low[i]:high[i]])`` for every window, the windows of a batch
    padded to the longest and sorted together (stored values are never NaN); empty windows
    give NaN."""
    count = high - low
    out = np.full(len(low), np.nan)
    longest = int(count.max()) if len(count) else 0
    if longest == 0 or not len(values):
        return out
    batch = max(1, _BATCH_VALUES // longest)
    offsets = np.arange(longest)
    for begin in range(0, len(low), batch):
        part = slice(begin, begin + batch)
        at = low[part, None] + offsets[None, :]
        inside = at < high[part, None]
        window = np.where(inside, values[np.minimum(at, len(values) - 1)], np.inf)
        window.sort(axis=1)
        n = count[part]
        wanted = q[part]
        usable = ~np.isnan(wanted) & (wanted >= 0) & (wanted <= 1)
        rank = np.where(usable, wanted, 0.0) * np.maximum(n - 1, 0)
        lower = np.floor(rank).astype(np.int64)
        upper = np.minimum(np.maximum(n - 1, 0), lower + 1)
        weight = rank - np.floor(rank)
        rows = np.arange(len(n))
        with np.errstate(invalid="ignore"):
            found = window[rows, lower] * (1 - weight) + window[rows, upper] * weight
        found = np.where(wanted < 0, -np.inf, np.where(wanted > 1, np.inf, found))
        out[part] = np.where(np.isnan(wanted) | (n == 0), np.nan, found)
    return out

"""``sum``, ``avg``, ``min``, ``max``, ``count``, ``topk``, ``bottomk`` and ``quantile`` with
``by``/``without``, at every step at once, as Prometheus 2.42 computes them.

Groups come in the order their first series appears; a group's series are stacked into a
(series x steps) array, absent samples masked. ``avg`` is Prometheus' running mean (with its
handling of infinities), ``min``/``max`` skip NaN unless every value is NaN, ``topk`` and
``bottomk`` rank NaN last and return each chosen series with its own labels (the metric name
included). In an instant query their results are ordered as Prometheus orders them: by group,
then by value (descending for ``topk``, ascending for ``bottomk``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.values import (
    METRIC_NAME,
    BoolArray,
    FloatArray,
    IntArray,
    Labels,
    StepSeries,
    VectorValue,
    format_value,
)


def group_key(labels: Labels, grouping: Sequence[str], without: bool) -> Labels:
    if without:
        dropped = {*grouping, METRIC_NAME}
        return tuple(pair for pair in labels if pair[0] not in dropped)
    kept = set(grouping)
    return tuple(pair for pair in labels if pair[0] in kept)


def aggregate(
    op: str,
    vector: VectorValue,
    grouping: Sequence[str],
    without: bool,
    param: FloatArray | None,
    steps: int,
) -> VectorValue:
    if op in ("topk", "bottomk") and param is not None:
        wrong = param[~((param >= -(2.0**63)) & (param <= 2.0**63))]
        if len(wrong):
            raise ExecutionError(f"Scalar value {format_value(float(wrong[0]))} overflows int64")
    groups: dict[Labels, list[StepSeries]] = {}
    for series in vector.series:
        groups.setdefault(group_key(series.labels, grouping, without), []).append(series)
    out: list[StepSeries] = []
    for key, members in groups.items():
        values = np.array([m.values for m in members], np.float64).reshape(len(members), steps)
        present = np.array([m.present for m in members], np.bool_).reshape(len(members), steps)
        if op in ("topk", "bottomk"):
            assert param is not None
            out.extend(_chosen(members, values, present, param, top=op == "topk"))
            continue
        count = present.sum(axis=0)
        any_present = count > 0
        result = _reduce(op, values, present, count, param)
        out.append(StepSeries(key, np.where(any_present, result, 0.0), any_present))
    return VectorValue(tuple(s for s in out if s.present.any()))


def _reduce(
    op: str,
    values: FloatArray,
    present: BoolArray,
    count: IntArray,
    param: FloatArray | None,
) -> FloatArray:
    if op == "sum":
        total: FloatArray = np.where(present, values, 0.0).sum(axis=0)
        return total
    if op == "count":
        return count.astype(np.float64)
    if op == "avg":
        return _running_mean(values, present)
    if op in ("min", "max"):
        masked = np.where(present, values, np.nan)
        pick = np.fmin if op == "min" else np.fmax
        extreme: FloatArray = pick.reduce(masked, axis=0)
        return extreme
    assert op == "quantile" and param is not None
    return column_quantiles(values, present, param)


def _running_mean(values: FloatArray, present: BoolArray) -> FloatArray:
    """Prometheus' ``avg``: ``mean += v/n - mean/n`` in input order, keeping an infinite mean
    when the next value is finite or the same infinity."""
    steps = values.shape[1]
    mean = np.zeros(steps)
    count = np.zeros(steps)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for v, p in zip(values, present, strict=True):
            first = p & (count == 0)
            later = p & ~first
            count = count + p
            infinite = np.isinf(mean)
            keep = infinite & (
                (np.isinf(v) & ((mean > 0) == (v > 0))) | (~np.isinf(v) & ~np.isnan(v))
            )
            step = v / np.maximum(count, 1) - mean / np.maximum(count, 1)
            mean = np.where(first, v, np.where(later & ~keep, mean + step, mean))
    return mean


def column_quantiles(values: FloatArray, present: BoolArray, q: FloatArray) -> FloatArray:
    """Prometheus' ``quantile`` of each column's present values (NaN sorts first)."""
    count = present.sum(axis=0)
    nan = np.isnan(values)
    tier = np.where(~present, 2, np.where(nan, 0, 1))
    clean = np.where(present & ~nan, values, 0.0)
    order = np.lexsort((clean, tier), axis=0)
    ordered = np.take_along_axis(values, order, axis=0)
    usable = ~np.isnan(q) & (q >= 0) & (q <= 1)
    rank = np.where(usable, q, 0.0) * np.maximum(count - 1, 0)
    lower = np.maximum(0, np.floor(rank)).astype(np.int64)
    upper = np.minimum(np.maximum(count - 1, 0), lower + 1).astype(np.int64)
    weight = rank - np.floor(rank)
    columns = np.arange(values.shape[1])
    with np.errstate(invalid="ignore"):
        found = ordered[lower, columns] * (1 - weight) + ordered[upper, columns] * weight
    found = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, found))
    return np.where(np.isnan(q), np.nan, found)


def _chosen(
    members: list[StepSeries],
    values: FloatArray,
    present: BoolArray,
    param: FloatArray,
    *,
    top: bool,
) -> list[StepSeries]:
    """``topk``/``bottomk`` within one group: at each step the ``k`` best present samples
    (NaN worst), each kept under its own labels."""
    with np.errstate(invalid="ignore"):
        k = np.where(np.isnan(param), 0, np.clip(param, -1, len(members))).astype(np.int64)
    nan = np.isnan(values)
    tier = np.where(~present, 0, np.where(nan, 1, 2))  # larger is better
    clean = np.where(present & ~nan, values if top else -values, 0.0)
    order = np.lexsort((-clean, -tier), axis=0)  # best first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(len(members))[:, None], axis=0)
    chosen = present & (rank < k[None, :])
    out = [
        StepSeries(m.labels, m.values, chosen[i]) for i, m in enumerate(members) if chosen[i].any()
    ]
    if values.shape[1] == 1:  # an instant query: Prometheus' order, best first
        out.sort(key=lambda s: _instant_rank(s, top))
    return out


def _instant_rank(series: StepSeries, top: bool) -> tuple[bool, float]:
    value = float(series.values[0])
    if np.isnan(value):
        return True, 0.0
    return False, -value if top else value

"""Arithmetic (``+ - * / % ^ atan2``) and comparison (``== != > < >= <=``, with or without
``bool``) between scalars and vectors, with ``on``/``ignoring`` and
``group_left``/``group_right``, and the set operators ``and``, ``or``, ``unless`` between
vectors, as Prometheus 2.42 computes them at each step.

Arithmetic (but ``atan2``, as in Prometheus 2.42) and ``bool`` drop the metric name; a
filtering comparison keeps the series (and the vector side's value, even when the scalar is on
the left). Between vectors the "one" side
must have one series per matching label set at each step, and the results must be unique,
else the evaluation fails with Prometheus' message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.syntax import COMPARISON, BinaryNode, Card
from recorder.query.promql.values import (
    METRIC_NAME,
    BoolArray,
    FloatArray,
    Labels,
    ScalarValue,
    StepSeries,
    VectorValue,
    label_value,
    labels_of,
    labels_text,
    merged,
    without_name,
)


def apply(op: str, lhs: FloatArray, rhs: FloatArray) -> tuple[FloatArray, BoolArray]:
    """The value of ``lhs op rhs`` and, for comparisons, whether it holds (Go's float
    semantics: NaN compares false, ``%`` is ``math.Mod``, ``^`` is ``math.Pow``). A
    comparison's value is ``lhs``."""
    with np.errstate(all="ignore"):
        if op == "+":
            return lhs + rhs, _true(lhs)
        if op == "-":
            return lhs - rhs, _true(lhs)
        if op == "*":
            return lhs * rhs, _true(lhs)
        if op == "/":
            return lhs / rhs, _true(lhs)
        if op == "%":
            return np.fmod(lhs, rhs), _true(lhs)
        if op == "^":
            return np.power(lhs, rhs), _true(lhs)
        if op == "atan2":
            return np.arctan2(lhs, rhs), _true(lhs)
        holds = {
            "==": np.equal,
            "!=": np.not_equal,
            ">": np.greater,
            "<": np.less,
            ">=": np.greater_equal,
            "<=": np.less_equal,
        }[op](lhs, rhs)
    return lhs, holds


def drops_name(node: BinaryNode) -> bool:
    """Prometheus 2.42's ``shouldDropMetricName`` (``+ - * / % ^``: not ``atan2``, not a
    filtering comparison), or ``bool``."""
    return node.op in _NAME_DROPPING or node.return_bool


_NAME_DROPPING = frozenset({"+", "-", "*", "/", "%", "^"})


def _true(like: FloatArray) -> BoolArray:
    return np.ones(like.shape, np.bool_)


def scalars(node: BinaryNode, lhs: ScalarValue, rhs: ScalarValue) -> ScalarValue:
    value, holds = apply(node.op, lhs.values, rhs.values)
    if node.op in COMPARISON:  # the parser allows it only with bool
        value = holds.astype(np.float64)
    return ScalarValue(value)


def vector_scalar(
    node: BinaryNode, vector: VectorValue, scalar: ScalarValue, *, scalar_left: bool
) -> VectorValue:
    comparison = node.op in COMPARISON
    out = []
    for series in vector.series:
        left, right = (
            (scalar.values, series.values) if scalar_left else (series.values, scalar.values)
        )
        value, holds = apply(node.op, left, right)
        if comparison:
            value = series.values
        if node.return_bool:
            value = holds.astype(np.float64)
            present = series.present
        else:
            present = series.present & holds
        labels = series.labels
        if drops_name(node):
            labels = without_name(labels)
        out.append(StepSeries(labels, value, present))
    return VectorValue(merged(out, "vector cannot contain metrics with the same labelset"))


def signature(labels: Labels, node: BinaryNode) -> Labels:
    """The labels two sides match on: ``on``'s list, or all but ``ignoring``'s and the name."""
    if node.on:
        wanted = set(node.matching)
        return tuple(pair for pair in labels if pair[0] in wanted)
    dropped = {*node.matching, METRIC_NAME}
    return tuple(pair for pair in labels if pair[0] not in dropped)


def _result_labels(left: Labels, right: Labels, node: BinaryNode) -> Labels:
    """Prometheus' ``resultMetric``: the "many" side's labels, less the name for arithmetic,
    restricted by ``on``/``ignoring`` for one-to-one, plus ``group_x``'s labels from the
    "one" side (removed where it has none); ``bool`` drops the name too."""
    pairs = dict(left)
    if drops_name(node):
        pairs.pop(METRIC_NAME, None)
    if node.card is Card.ONE_TO_ONE:
        if node.on:
            pairs = {k: v for k, v in pairs.items() if k in node.matching}
        else:
            for name in node.matching:
                pairs.pop(name, None)
    for name in node.include:
        value = label_value(right, name)
        if value:
            pairs[name] = value
        else:
            pairs.pop(name, None)
    return labels_of(pairs)


def vectors(node: BinaryNode, lhs: VectorValue, rhs: VectorValue, steps: int) -> VectorValue:
    many, one = (
        (rhs.series, lhs.series) if node.card is Card.ONE_TO_MANY else (lhs.series, rhs.series)
    )
    ones: dict[Labels, list[StepSeries]] = {}
    for series in one:
        ones.setdefault(signature(series.labels, node), []).append(series)
    for sig, group in ones.items():
        _check_unique_one(group, sig, node)
    comparison = node.op in COMPARISON
    out: list[StepSeries] = []
    matched = {sig: np.zeros(steps, np.int64) for sig in ones}
    for series in many:
        sig = signature(series.labels, node)
        for other in ones.get(sig, ()):
            both = series.present & other.present
            if not both.any():
                continue
            left, right = series.values, other.values
            if node.card is Card.ONE_TO_MANY:
                left, right = right, left
            value, holds = apply(node.op, left, right)
            if node.return_bool:
                value, present = holds.astype(np.float64), both
            else:
                present = both & holds if comparison else both
            if node.card is Card.ONE_TO_ONE:
                matched[sig] += present
            labels = _result_labels(series.labels, other.labels, node)
            out.append(StepSeries(labels, value, present))
    if node.card is Card.ONE_TO_ONE and any((count > 1).any() for count in matched.values()):
        raise ExecutionError(
            "multiple matches for labels: many-to-one matching must be explicit "
            "(group_left/group_right)"
        )
    message = (
        "vector cannot contain metrics with the same labelset"
        if node.card is Card.ONE_TO_ONE
        else "multiple matches for labels: grouping labels must ensure unique results"
    )
    return VectorValue(merged(out, message))


def _check_unique_one(group: Sequence[StepSeries], sig: Labels, node: BinaryNode) -> None:
    """The "one" side has at most one series per matching labels at each step."""
    if len(group) < 2:
        return
    count = np.sum([s.present for s in group], axis=0)
    if (count > 1).any():
        side = "left" if node.card is Card.ONE_TO_MANY else "right"
        raise ExecutionError(
            f"found duplicate series for the match group {labels_text(sig)} on the {side} "
            f"hand-side of the operation: [{labels_text(group[0].labels)}, "
            f"{labels_text(group[1].labels)}];many-to-many matching not allowed: matching "
            "labels must be unique on one side"
        )


def sets(node: BinaryNode, lhs: VectorValue, rhs: VectorValue, steps: int) -> VectorValue:
    """``and``, ``or``, ``unless``: at each step, which series of each side have a sample
    whose matching labels (``signature``) the other side has too; labels and values are kept
    as they are."""
    other = rhs if node.op in ("and", "unless") else lhs
    present: dict[Labels, BoolArray] = {}
    for series in other.series:
        sig = signature(series.labels, node)
        present[sig] = present.get(sig, np.zeros(steps, np.bool_)) | series.present
    none = np.zeros(steps, np.bool_)
    out: list[StepSeries] = []
    if node.op == "or":
        out.extend(lhs.series)
        for series in rhs.series:
            shown = series.present & ~present.get(signature(series.labels, node), none)
            out.append(StepSeries(series.labels, series.values, shown))
    else:
        for series in lhs.series:
            matched = present.get(signature(series.labels, node), none)
            shown = series.present & (matched if node.op == "and" else ~matched)
            out.append(StepSeries(series.labels, series.values, shown))
    return VectorValue(merged(out, "vector cannot contain metrics with the same labelset"))

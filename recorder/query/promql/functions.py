"""The instant-vector functions of the subset: ``scalar``, ``vector``, ``clamp_min``,
``clamp_max``, ``label_replace`` and ``absent``, as Prometheus 2.42 computes them at each step
(the ``*_over_time`` functions are in ``windows``)."""

from __future__ import annotations

import re

import numpy as np

from recorder.errors import QueryError
from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.matchers import MatchOp, compile_anchored
from recorder.query.promql.syntax import SelectorNode
from recorder.query.promql.values import (
    METRIC_NAME,
    SAME_LABELSET,
    FloatArray,
    Labels,
    ScalarValue,
    StepSeries,
    VectorValue,
    label_value,
    labels_of,
    merged,
    without_name,
)

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def scalar(vector: VectorValue, steps: int) -> ScalarValue:
    """The one sample's value at each step, NaN where there are none or several."""
    count = np.zeros(steps, np.int64)
    values = np.full(steps, np.nan)
    for series in vector.series:
        count += series.present
        values = np.where(series.present, series.values, values)
    return ScalarValue(np.where(count == 1, values, np.nan))


def vector(value: ScalarValue) -> VectorValue:
    return VectorValue((StepSeries((), value.values.copy(), np.ones(len(value.values), np.bool_)),))


def clamp(vector: VectorValue, bound: FloatArray, *, upper: bool) -> VectorValue:
    """``clamp_max`` (``upper``) or ``clamp_min``: NaN bounds and values give NaN, as Go's
    ``math.Min``/``math.Max``; the metric name is dropped."""
    pick = np.minimum if upper else np.maximum
    out = [
        StepSeries(without_name(s.labels), pick(s.values, bound), s.present) for s in vector.series
    ]
    return VectorValue(merged(out, SAME_LABELSET))


def label_replace(
    vector: VectorValue, destination: str, replacement: str, source: str, regex: str
) -> VectorValue:
    """Sets ``destination`` to ``replacement`` (``$1``, ``${name}`` expanded) where the
    anchored ``regex`` matches the ``source`` label's value; an empty result removes it."""
    try:
        pattern = compile_anchored(regex, "label_replace()")
    except QueryError:
        raise ExecutionError(
            f"invalid regular expression in label_replace(): {regex[:200]}"
        ) from None
    if not _LABEL_NAME.fullmatch(destination):
        raise ExecutionError(f"invalid destination label name in label_replace(): {destination}")
    out = []
    for series in vector.series:
        found = pattern.fullmatch(label_value(series.labels, source))
        labels = series.labels
        if found is not None:
            result = expand(replacement, found)
            rest = [pair for pair in labels if pair[0] != destination]
            labels = labels_of([*rest, (destination, result)])
        out.append(StepSeries(labels, series.values, series.present))
    return VectorValue(merged(out, SAME_LABELSET))


def expand(template: str, found: re.Match[str]) -> str:
    """Go's ``Regexp.Expand``, which Prometheus uses: ``$name`` takes the longest run of
    letters, digits and underscores (``$1x`` is the group named ``1x``), ``${name}`` is
    explicit, ``$$`` is ``$``, a malformed reference is kept as text; a group that does not
    exist or did not take part expands to nothing."""
    out = []
    rest = template
    while True:
        before, dollar, after = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if after.startswith("$"):
            out.append("$")
            rest = after[1:]
            continue
        reference = _extract(after)
        if reference is None:
            out.append("$")
            rest = after
            continue
        name, rest = reference
        out.append(_group(found, name))


def _extract(text: str) -> tuple[str, str] | None:
    """Go's ``extract``: the name a reference starts with, and the text after it."""
    brace = text.startswith("{")
    body = text[1:] if brace else text
    length = 0
    while length < len(body) and (body[length].isalnum() or body[length] == "_"):
        length += 1
    if length == 0:
        return None
    name = body[:length]
    if brace:
        if length >= len(body) or body[length] != "}":
            return None
        length += 1
    return name, body[length:]


def _group(found: re.Match[str], name: str) -> str:
    number = -1
    if (
        name.isascii()
        and name.isdigit()
        and len(name) <= 8
        and not (name[0] == "0" and len(name) > 1)
    ):
        number = int(name)
    try:
        value = found.group(number if number >= 0 else name)
    except IndexError:
        return ""
    return value or ""


def absent(vector: VectorValue, argument: object, steps: int) -> VectorValue:
    """1 at each step where ``vector`` has no sample, labelled with the argument selector's
    equality matchers (a label matched in any other way, or twice, is left out)."""
    present = np.zeros(steps, np.bool_)
    for series in vector.series:
        present |= series.present
    missing = ~present
    if not missing.any():
        return VectorValue(())
    return VectorValue((StepSeries(absent_labels(argument), np.ones(steps), missing),))


def absent_labels(argument: object) -> Labels:
    if not isinstance(argument, SelectorNode):
        return ()
    chosen: dict[str, str] = {}
    dropped: set[str] = set()
    for matcher in argument.matchers:
        if matcher.name == METRIC_NAME:
            continue
        if matcher.op is MatchOp.EQUAL and matcher.name not in chosen:
            chosen[matcher.name] = matcher.value
        else:
            dropped.add(matcher.name)
    return labels_of((k, v) for k, v in chosen.items() if k not in dropped)

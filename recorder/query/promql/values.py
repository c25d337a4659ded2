"""What a PromQL expression evaluates to, at every step of a query at once.

An instant vector is a list of ``StepSeries``: one label set and, for every step, a value and
whether the series has one there (values may be NaN, so presence is its own column). A scalar
has a value at every step. A range selector stays unevaluated (``RangeValue``: the raw samples
and the window each step looks at) until a ``*_over_time`` function or the query's result
reads it. Label sets are tuples of ``(name, value)`` pairs sorted by name, without empty
values, as Prometheus keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from recorder.query.promql.failures import ExecutionError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

METRIC_NAME = "__name__"

Labels = tuple[tuple[str, str], ...]
"""A label set: ``(name, value)`` pairs sorted by name, no empty value."""


def labels_of(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted((name, value) for name, value in items if value != ""))


def without_name(labels: Labels) -> Labels:
    return tuple(pair for pair in labels if pair[0] != METRIC_NAME)


def label_value(labels: Labels, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


def format_value(value: float) -> str:
    """As Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` (no exponent), with Prometheus'
    ``NaN``, ``+Inf`` and ``-Inf``."""
    text = repr(float(value))
    if text[-2:] == ".0":  # the common cases first: a response may hold a million values
        return text[:-2]
    if text[-1] in "0123456789" and "e" not in text:
        return text
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(text), "f").removesuffix(".0")


def labels_text(labels: Labels) -> str:
    """As Prometheus prints a label set in its messages: ``{a="1", b="2"}``."""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


@dataclass(frozen=True, slots=True)
class Steps:
    """The instants a query evaluates at: ``start_ms``, ``start_ms + step_ms``, ... up to
    ``end_ms`` (one instant for an instant query)."""

    start_ms: int
    end_ms: int
    step_ms: int
    times_ms: IntArray

    @classmethod
    def of(cls, start_ms: int, end_ms: int, step_ms: int) -> Steps:
        times = np.arange(start_ms, end_ms + 1, max(step_ms, 1), dtype=np.int64)
        return cls(start_ms, end_ms, step_ms, times)

    @property
    def count(self) -> int:
        return len(self.times_ms)


@dataclass(frozen=True, slots=True, eq=False)
class StepSeries:
    """One series of an instant vector: its value at each step where ``present``."""

    labels: Labels
    values: FloatArray
    present: BoolArray


@dataclass(frozen=True, slots=True, eq=False)
class VectorValue:
    series: tuple[StepSeries, ...]


@dataclass(frozen=True, slots=True, eq=False)
class ScalarValue:
    values: FloatArray


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class RawSeries:
    """One stored series' samples, time-ordered: ``values[i] = ints[i] / scale`` (CPU is kept
    in nanocores, scale 1e9; memory in bytes, scale 1)."""

    labels: Labels
    timestamps_ms: IntArray
    ints: IntArray
    scale: float

    @property
    def values(self) -> FloatArray:
        if self.scale == 1.0:
            return self.ints.astype(np.float64)
        return self.ints / self.scale


@dataclass(frozen=True, slots=True, eq=False)
class RangeValue:
    """A range selector: at each step ``t`` it holds the samples of ``[t' - range_ms, t']``
    (both ends included, as in Prometheus 2.x), ``t'`` being ``t`` (or the ``@`` time) less
    the offset: ``ends_ms`` has ``t'`` for every step."""

    series: tuple[RawSeries, ...]
    range_ms: int
    ends_ms: IntArray


Value = VectorValue | ScalarValue | StringValue | RangeValue


def kept(series: Iterable[StepSeries]) -> tuple[StepSeries, ...]:
    """The series that have a value at some step."""
    return tuple(s for s in series if s.present.any())


def merged(series: Sequence[StepSeries], message: str) -> tuple[StepSeries, ...]:
    """Series with the same label set joined into one (in the order each first appears);
    ``ExecutionError(message)`` where two of them have a value at the same step: what
    Prometheus does at each step of a range query, and an instant query's "vector cannot
    contain metrics with the same labelset"."""
    by_labels: dict[Labels, list[StepSeries]] = {}
    for one in series:
        if one.present.any():
            by_labels.setdefault(one.labels, []).append(one)
    out = []
    for labels, group in by_labels.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        count = np.sum([g.present for g in group], axis=0)
        if (count > 1).any():
            raise ExecutionError(message)
        values = np.zeros_like(group[0].values)
        present = np.zeros_like(group[0].present)
        for g in group:
            values = np.where(g.present, g.values, values)
            present |= g.present
        out.append(StepSeries(labels, values, present))
    return tuple(out)


SAME_LABELSET = "vector cannot contain metrics with the same labelset"

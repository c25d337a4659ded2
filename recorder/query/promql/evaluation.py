"""The evaluation of a parsed query at every step of an instant or range query.

``instant_query`` and ``range_query`` are the entry points: they parse, check the result type
Prometheus allows (a range query answers a scalar or an instant vector only), evaluate every
node once over all the steps, and return a ``Result``. Selectors read their samples from a
``Source``: an instant selector takes at each step the newest sample in
``[t - 5m, t]`` (the lookback; our samples carry no staleness markers, so a series ends by
lookback alone, as over backfilled blocks), ``t`` being the step (or its ``@`` time) less the
``offset``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recorder.errors import QueryError
from recorder.query.promql import aggregations, binary, functions, tiers, windows
from recorder.query.promql.source import Source
from recorder.query.promql.syntax import (
    SET,
    AggregateNode,
    AtKind,
    BinaryNode,
    CallNode,
    NegationNode,
    Node,
    NumberNode,
    ParenNode,
    RangeNode,
    SelectorNode,
    StringNode,
    parse,
)
from recorder.query.promql.values import (
    SAME_LABELSET,
    IntArray,
    RangeValue,
    RawSeries,
    ScalarValue,
    Steps,
    StepSeries,
    StringValue,
    Value,
    VectorValue,
    merged,
    without_name,
)
from recorder.timeutil import MAX_TIME_MS, MIN_TIME_MS

__all__ = ["LOOKBACK_MS", "MAX_STEPS", "Result", "instant_query", "range_query"]

LOOKBACK_MS = 5 * 60_000
MAX_STEPS = 11_000
MAX_VALUES = 10_000_000
"""The most values (series x steps) one vector of a query may hold: about 90 MB (a float and a
flag each), so no query can take the server's memory (Prometheus' --query.max-samples)."""


@dataclass(frozen=True, slots=True, eq=False)
class Result:
    """What a query answers: its value over ``steps``, and whether it keeps Prometheus'
    order (``topk``/``bottomk`` at the top of an instant query) rather than label order."""

    value: Value
    steps: Steps
    ordered: bool = False
    warnings: tuple[str, ...] = ()
    """What the answer approximates (a statistics tier's), for the envelope's ``warnings``."""


def instant_query(source: Source, text: str, time_ms: int) -> Result:
    node = parse(text)
    steps = Steps.of(time_ms, time_ms, 0)
    evaluator = Evaluator(source, steps)
    value = evaluator.evaluate(node)
    return Result(value, steps, ordered=_ordered(node), warnings=evaluator.said())


def check_range(start_ms: int, end_ms: int, step_ms: int) -> None:
    """``QueryError`` for the range and step Prometheus refuses."""
    if end_ms < start_ms:
        raise QueryError("end timestamp must not be before start time")
    if step_ms <= 0:
        raise QueryError(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    if (end_ms - start_ms) // step_ms > MAX_STEPS:
        raise QueryError(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
            "query resolution (?step=XX)"
        )


def range_query(source: Source, text: str, start_ms: int, end_ms: int, step_ms: int) -> Result:
    check_range(start_ms, end_ms, step_ms)
    node = parse(text)
    steps = Steps.of(start_ms, end_ms, step_ms)
    evaluator = Evaluator(source, steps)
    value = evaluator.evaluate(node)
    if isinstance(value, RangeValue | StringValue):
        kind = "range vector" if isinstance(value, RangeValue) else "string"
        raise QueryError(
            f'invalid expression type "{kind}" for range query, must be Scalar or instant Vector'
        )
    return Result(value, steps, warnings=evaluator.said())


def _ordered(node: Node) -> bool:
    while isinstance(node, ParenNode):
        node = node.expr
    return isinstance(node, AggregateNode) and node.op in ("topk", "bottomk")


def _clamped(ms: int) -> int:
    return min(max(ms, MIN_TIME_MS), MAX_TIME_MS)


class Evaluator:
    def __init__(self, source: Source, steps: Steps, *, max_values: int = MAX_VALUES) -> None:
        self.source = source
        self.steps = steps
        self.max_values = max_values
        self.warnings: list[str] = []

    def said(self) -> tuple[str, ...]:
        """The warnings of the evaluation, each once, in order."""
        return tuple(dict.fromkeys(self.warnings))

    def _hold(self, series: int) -> None:
        """``QueryError`` if ``series`` series over every step are more than ``max_values``."""
        if series * self.steps.count > self.max_values:
            raise QueryError(
                f"the query would hold {series} series x {self.steps.count} steps, more than "
                f"{self.max_values} values: use a larger step, a shorter range or fewer series"
            )

    def evaluate(self, node: Node) -> Value:
        value = self._evaluated(node)
        if isinstance(value, VectorValue):
            self._hold(len(value.series))
        return value

    def _evaluated(self, node: Node) -> Value:
        if isinstance(node, NumberNode):
            return ScalarValue(np.full(self.steps.count, node.value))
        if isinstance(node, StringNode):
            return StringValue(node.text)
        if isinstance(node, ParenNode):
            return self.evaluate(node.expr)
        if isinstance(node, SelectorNode):
            return self._instant(node)
        if isinstance(node, RangeNode):
            return self._range(node)
        if isinstance(node, NegationNode):
            return self._negated(node)
        if isinstance(node, CallNode):
            return self._call(node)
        if isinstance(node, AggregateNode):
            return self._aggregate(node)
        return self._binary(node)

    # --- selectors ------------------------------------------------------------------------

    def _ends(self, selector: SelectorNode) -> IntArray:
        """Each step's reference time: the step or its ``@`` time, less the offset."""
        at = selector.at
        if at is None:
            times = self.steps.times_ms
        else:
            when = {
                AtKind.START: self.steps.start_ms,
                AtKind.END: self.steps.end_ms,
                AtKind.TIME: at.time_ms,
            }[at.kind]
            times = np.full(self.steps.count, when, np.int64)
        return times - selector.offset_ms

    def _read(self, selector: SelectorNode, ends: IntArray, span_ms: int) -> list[RawSeries]:
        low = _clamped(int(ends.min()) - span_ms)
        high = _clamped(int(ends.max()))
        if int(ends.max()) < MIN_TIME_MS or int(ends.min()) - span_ms > MAX_TIME_MS:
            return []
        return self.source.select(selector.matchers, low, high)

    def _instant(self, selector: SelectorNode) -> VectorValue:
        ends = self._ends(selector)
        found_series = self._read(selector, ends, LOOKBACK_MS)
        self._hold(len(found_series))
        out = []
        for series in found_series:
            stamps = series.timestamps_ms
            newest = np.searchsorted(stamps, ends, "right") - 1
            found = newest >= 0
            at = np.where(found, newest, 0)
            found &= stamps[at] >= ends - LOOKBACK_MS
            if found.any():
                out.append(
                    StepSeries(series.labels, np.where(found, series.values[at], 0.0), found)
                )
        return VectorValue(tuple(out))

    def _range(self, node: RangeNode) -> RangeValue:
        ends = self._ends(node.selector)
        found = self._read(node.selector, ends, node.range_ms)
        return RangeValue(tuple(found), node.range_ms, ends)

    # --- operators ----------------------------------------------------------------------

    def _negated(self, node: NegationNode) -> Value:
        value = self.evaluate(node.expr)
        if isinstance(value, ScalarValue):
            return ScalarValue(-value.values)
        vector = self._vector(value, "unary minus")
        out = [StepSeries(without_name(s.labels), -s.values, s.present) for s in vector.series]
        return VectorValue(merged(out, SAME_LABELSET))

    def _binary(self, node: BinaryNode) -> Value:
        lhs, rhs = self.evaluate(node.lhs), self.evaluate(node.rhs)
        if isinstance(lhs, ScalarValue) and isinstance(rhs, ScalarValue):
            return binary.scalars(node, lhs, rhs)
        if isinstance(rhs, ScalarValue):
            return binary.vector_scalar(node, self._vector(lhs, node.op), rhs, scalar_left=False)
        if isinstance(lhs, ScalarValue):
            return binary.vector_scalar(node, self._vector(rhs, node.op), lhs, scalar_left=True)
        if node.op in SET:
            return binary.sets(
                node, self._vector(lhs, node.op), self._vector(rhs, node.op), self.steps.count
            )
        return binary.vectors(
            node, self._vector(lhs, node.op), self._vector(rhs, node.op), self.steps.count
        )

    def _aggregate(self, node: AggregateNode) -> VectorValue:
        param = None
        if node.param is not None:
            param = self._scalar(self.evaluate(node.param), node.op).values
        vector = self._vector(self.evaluate(node.expr), node.op)
        return aggregations.aggregate(
            node.op, vector, node.grouping, node.without, param, self.steps.count
        )

    def _call(self, node: CallNode) -> Value:
        name = node.name
        if name in tiers.FUNCTIONS and (tiered := self._tiered(node)) is not None:
            return tiered
        args = [self.evaluate(arg) for arg in node.args]
        count = self.steps.count
        if name.endswith("_over_time"):
            q = None
            if name == "quantile_over_time":
                q = self._scalar(args[0], name).values
                args = args[1:]
            matrix = args[0]
            if not isinstance(matrix, RangeValue):
                raise QueryError(f"expected a range vector in {name}()")
            self._hold(len(matrix.series))
            return VectorValue(tuple(windows.over_time(name, matrix, q)))
        if name == "time":
            return ScalarValue(self.steps.times_ms / 1000)
        if name == "scalar":
            return functions.scalar(self._vector(args[0], name), count)
        if name == "vector":
            return functions.vector(self._scalar(args[0], name))
        if name in ("clamp_min", "clamp_max"):
            bound = self._scalar(args[1], name).values
            return functions.clamp(self._vector(args[0], name), bound, upper=name == "clamp_max")
        if name == "label_replace":
            texts = [self._string(arg, name) for arg in args[1:]]
            return functions.label_replace(self._vector(args[0], name), *texts)
        assert name == "absent"
        return functions.absent(self._vector(args[0], name), node.args[0], count)

    def _tiered(self, node: CallNode) -> VectorValue | None:
        """``node`` (a ``*_over_time`` of a range selector) answered by the source's
        statistics tiers, or None where the raw samples answer."""
        matrix = node.args[-1]
        if not isinstance(matrix, RangeNode):
            return None
        ends = self._ends(matrix.selector)
        if int(ends.min()) - matrix.range_ms < MIN_TIME_MS or int(ends.max()) > MAX_TIME_MS:
            return None
        q = None
        if node.name == "quantile_over_time":
            q = self._scalar(self.evaluate(node.args[0]), node.name).values
        answer = self.source.over_time(
            node.name, matrix.selector.matchers, ends, matrix.range_ms, q
        )
        if answer is None:
            return None
        self._hold(len(answer.series))
        self.warnings.extend(answer.warnings)
        return VectorValue(answer.series)

    # --- types ---------------------------------------------------------------------------

    @staticmethod
    def _vector(value: Value, where: str) -> VectorValue:
        if not isinstance(value, VectorValue):
            raise QueryError(f"{where}: expected an instant vector")
        return value

    @staticmethod
    def _scalar(value: Value, where: str) -> ScalarValue:
        if not isinstance(value, ScalarValue):
            raise QueryError(f"{where}: expected a scalar")
        return value

    @staticmethod
    def _string(value: Value, where: str) -> str:
        if not isinstance(value, StringValue):
            raise QueryError(f"{where}: expected a string")
        return value.text

"""A PromQL query parsed by ``promql_parser`` (bindings of a Rust PromQL parser) and turned
into our own typed nodes, refusing what the recorder does not evaluate with a ``QueryError``
that names it (Prometheus' ``bad_data``): never a wrong answer.

Bounds: a query of at most ``MAX_QUERY_CHARS`` characters, of which at most
``MAX_SYNTAX_CHARS`` outside string literals (the parser recurses on nesting, and a few
thousand levels overflow its stack), and at most ``MAX_DEPTH`` nested nodes (our evaluator
recurses too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import promql_parser as pp

from recorder.errors import QueryError
from recorder.query.promql.matchers import Matcher, MatchOp
from recorder.query.promql.values import METRIC_NAME

MAX_QUERY_CHARS = 65_536
MAX_SYNTAX_CHARS = 4096
MAX_DEPTH = 120
MAX_DURATION_MS = 100 * 365 * 86_400_000
"""Offsets and ranges longer than a century are refused (they reach no stored sample and
would overflow the time arithmetic)."""

FUNCTIONS = frozenset(
    {
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "last_over_time",
        "scalar",
        "vector",
        "clamp_min",
        "clamp_max",
        "label_replace",
        "absent",
        "time",
    }
)
AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile"})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET = frozenset({"and", "or", "unless"})


class AtKind(StrEnum):
    START = "start"
    END = "end"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class At:
    """An ``@`` modifier: ``start()``, ``end()`` or a time."""

    kind: AtKind
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class NumberNode:
    value: float


@dataclass(frozen=True, slots=True)
class StringNode:
    text: str


@dataclass(frozen=True, slots=True)
class ParenNode:
    expr: Node


@dataclass(frozen=True, slots=True)
class SelectorNode:
    matchers: tuple[Matcher, ...]
    offset_ms: int
    at: At | None


@dataclass(frozen=True, slots=True)
class RangeNode:
    selector: SelectorNode
    range_ms: int


@dataclass(frozen=True, slots=True)
class CallNode:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AggregateNode:
    op: str
    expr: Node
    param: Node | None
    grouping: tuple[str, ...]
    without: bool


@dataclass(frozen=True, slots=True)
class NegationNode:
    expr: Node


class Card(StrEnum):
    ONE_TO_ONE = "one-to-one"
    MANY_TO_ONE = "many-to-one"
    ONE_TO_MANY = "one-to-many"
    MANY_TO_MANY = "many-to-many"


@dataclass(frozen=True, slots=True)
class BinaryNode:
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    card: Card = Card.ONE_TO_ONE
    on: bool = False
    """``on(...)``; else ``ignoring(...)`` (or neither: ignoring nothing)."""
    matching: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    """The labels ``group_left``/``group_right`` copy from the "one" side."""


Node = (
    NumberNode
    | StringNode
    | ParenNode
    | SelectorNode
    | RangeNode
    | CallNode
    | AggregateNode
    | NegationNode
    | BinaryNode
)

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)


def parse(text: str) -> Node:
    """The query as our nodes; ``QueryError`` for a syntax error or an unsupported feature."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if len(_STRINGS.sub('""', text)) > MAX_SYNTAX_CHARS:
        raise QueryError(
            f"the query is longer than {MAX_SYNTAX_CHARS} characters outside its strings"
        )
    if not text.strip():
        raise QueryError("the query is empty")
    if "\x00" in text:
        raise QueryError("the query holds a NUL character")
    try:
        expr = pp.parse(text)
    except ValueError as exc:
        raise QueryError(f"parse error: {exc}") from None
    except BaseException as exc:  # a panic of the Rust parser (pyo3 PanicException)
        if isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError):
            raise
        raise QueryError("parse error: the parser could not read this query") from None
    return _node(expr, 0)


def _ms(delta: timedelta, what: str) -> int:
    ms = delta // timedelta(milliseconds=1)
    if abs(ms) > MAX_DURATION_MS:
        raise QueryError(f"{what} is longer than 100 years")
    return int(ms)


def _node(expr: Any, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise QueryError(f"the query nests deeper than {MAX_DEPTH} levels")
    deeper = depth + 1
    if isinstance(expr, pp.NumberLiteral):
        return NumberNode(float(expr.val))
    if isinstance(expr, pp.StringLiteral):
        return StringNode(str(expr.val))
    if isinstance(expr, pp.ParenExpr):
        return ParenNode(_node(expr.expr, deeper))
    if isinstance(expr, pp.VectorSelector):
        return _selector(expr)
    if isinstance(expr, pp.MatrixSelector):
        return RangeNode(_selector(expr.vector_selector), _ms(expr.range, "a range"))
    if isinstance(expr, pp.UnaryExpr):
        return NegationNode(_node(expr.expr, deeper))
    if isinstance(expr, pp.Call):
        name = str(expr.func.name)
        if name not in FUNCTIONS:
            raise QueryError(
                f"function {name}() is not supported by the recorder's PromQL (supported: "
                f"{', '.join(sorted(FUNCTIONS))})"
            )
        return CallNode(name, tuple(_node(arg, deeper) for arg in expr.args))
    if isinstance(expr, pp.AggregateExpr):
        return _aggregate(expr, deeper)
    if isinstance(expr, pp.BinaryExpr):
        return _binary(expr, deeper)
    if isinstance(expr, pp.SubqueryExpr):
        raise QueryError("subqueries (expr[range:step]) are not supported by the recorder's PromQL")
    raise QueryError(f"{type(expr).__name__} is not supported by the recorder's PromQL")


_OPS = (
    (pp.MatchOp.Equal, MatchOp.EQUAL),
    (pp.MatchOp.NotEqual, MatchOp.NOT_EQUAL),
    (pp.MatchOp.Re, MatchOp.REGEX),
    (pp.MatchOp.NotRe, MatchOp.NOT_REGEX),
)


def _op(op: Any) -> MatchOp:
    for theirs, ours in _OPS:
        if op == theirs:
            return ours
    raise QueryError(f"unknown label matcher {op}")


def _selector(expr: Any) -> SelectorNode:
    if expr.matchers.or_matchers:
        raise QueryError("'or' inside a selector's braces is not PromQL of Prometheus 2.42")
    matchers = [Matcher.of(m.name, _op(m.op), m.value) for m in expr.matchers.matchers]
    if expr.name is not None:
        matchers.insert(0, Matcher.of(METRIC_NAME, MatchOp.EQUAL, str(expr.name)))
    if all(m.matches_empty for m in matchers):
        raise QueryError("vector selector must contain at least one non-empty matcher")
    offset = _ms(expr.offset, "an offset") if expr.offset is not None else 0
    return SelectorNode(tuple(matchers), offset, _at(expr.at))


def _at(at: Any) -> At | None:
    if at is None:
        return None
    if at.type == pp.AtModifierType.Start:
        return At(AtKind.START)
    if at.type == pp.AtModifierType.End:
        return At(AtKind.END)
    try:
        when = at.at
    except BaseException as exc:  # the binding panics on times it cannot represent
        if isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError):
            raise
        raise QueryError("@ times before 1970 or after 9999 are not supported") from None
    seconds = when.timestamp()
    return At(AtKind.TIME, round(seconds * 1000))


def _grouping(modifier: Any) -> tuple[tuple[str, ...], bool]:
    if modifier is None:
        return (), False
    return tuple(modifier.labels), modifier.type == pp.AggModifierType.Without


def _aggregate(expr: Any, deeper: int) -> AggregateNode:
    op = str(expr.op)
    if op not in AGGREGATIONS:
        raise QueryError(
            f"aggregation {op}() is not supported by the recorder's PromQL (supported: "
            f"{', '.join(sorted(AGGREGATIONS))})"
        )
    grouping, without = _grouping(expr.modifier)
    param = _node(expr.param, deeper) if expr.param is not None else None
    return AggregateNode(op, _node(expr.expr, deeper), param, grouping, without)


_CARDS = (
    (pp.VectorMatchCardinality.OneToOne, Card.ONE_TO_ONE),
    (pp.VectorMatchCardinality.ManyToOne, Card.MANY_TO_ONE),
    (pp.VectorMatchCardinality.OneToMany, Card.ONE_TO_MANY),
    (pp.VectorMatchCardinality.ManyToMany, Card.MANY_TO_MANY),
)


def _binary(expr: Any, deeper: int) -> BinaryNode:
    op = str(expr.op).strip()
    if op not in ARITHMETIC and op not in COMPARISON and op not in SET:
        raise QueryError(
            f"the binary operator {op!r} is not supported by the recorder's PromQL (supported: "
            "+ - * / % ^ atan2 == != > < >= <= and or unless)"
        )
    lhs, rhs = _node(expr.lhs, deeper), _node(expr.rhs, deeper)
    modifier = expr.modifier
    if modifier is None:
        return BinaryNode(op, lhs, rhs, card=Card.MANY_TO_MANY if op in SET else Card.ONE_TO_ONE)
    fill = modifier.fill_values
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise QueryError("fill modifiers are not PromQL of Prometheus 2.42")
    card = next((ours for theirs, ours in _CARDS if modifier.card == theirs), None)
    if card is None or (card is Card.MANY_TO_MANY) != (op in SET):
        raise QueryError("many-to-many matching is for and/or/unless only")
    matching = modifier.matching
    on = matching is not None and matching.type == pp.LabelModifierType.Include
    names = tuple(matching.labels) if matching is not None else ()
    include = tuple(modifier.group_labels or ())
    return BinaryNode(op, lhs, rhs, bool(modifier.return_bool), card, on, names, include)

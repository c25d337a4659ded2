"""What a PromQL query or a ``match[]`` list reaches, for access control: the namespaces its
selectors pin with ``namespace="..."`` and whether a selector can only match node series.

The HTTP routes ask this before evaluating, so a caller limited to some namespaces gets 403
for a selector that names another namespace or only node data, and a filtered answer (with a
warning) for a selector that spans namespaces (``StoreSource(namespaces=...)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from recorder.domain import Kind
from recorder.query.promql.catalog import ALL_FAMILIES
from recorder.query.promql.matchers import Matcher, MatchOp
from recorder.query.promql.syntax import (
    AggregateNode,
    BinaryNode,
    CallNode,
    NegationNode,
    Node,
    ParenNode,
    RangeNode,
    SelectorNode,
    parse,
)
from recorder.query.promql.values import METRIC_NAME

__all__ = ["Reach", "matches_reach", "query_reach"]

NAMESPACE = "namespace"


@dataclass(frozen=True, slots=True)
class Reach:
    """``namespaces``: every value a selector pins ``namespace`` to (``=``); ``nodes``: some
    selector matches node families only (``recorder_node_*``); ``pinned``: every selector
    pins a namespace (so the answer needs no filter once those may be read)."""

    namespaces: frozenset[str] = frozenset()
    nodes: bool = False
    pinned: bool = False


def query_reach(text: str | None) -> Reach:
    """The reach of a query (an empty or unparsable one reaches nothing: evaluating it
    answers the ``bad_data`` error)."""
    if not text:
        return Reach()
    try:
        node = parse(text)
    except ValueError:
        return Reach()
    return _reach([s.matchers for s in _selectors(node)])


def matches_reach(matches: Sequence[str]) -> Reach:
    """The reach of ``match[]`` selectors (unparsable ones left to the endpoint's error)."""
    found: list[tuple[Matcher, ...]] = []
    for text in matches:
        try:
            node = parse(text)
        except ValueError:
            continue
        found += [s.matchers for s in _selectors(node)]
    return _reach(found)


def _reach(selectors: Sequence[tuple[Matcher, ...]]) -> Reach:
    pins = [_pin(matchers) for matchers in selectors]
    return Reach(
        frozenset(pin for pin in pins if pin is not None),
        any(_nodes_only(matchers) for matchers in selectors),
        bool(pins) and all(pin is not None for pin in pins),
    )


def _pin(matchers: tuple[Matcher, ...]) -> str | None:
    for m in matchers:
        if m.name == NAMESPACE and m.op is MatchOp.EQUAL and m.value:
            return m.value
    return None


def _nodes_only(matchers: tuple[Matcher, ...]) -> bool:
    named = [m for m in matchers if m.name == METRIC_NAME]
    kinds = {f.kind for f in ALL_FAMILIES if all(m.matches(f.name) for m in named)}
    return kinds == {Kind.NODE}


def _selectors(node: Node) -> Iterator[SelectorNode]:
    if isinstance(node, SelectorNode):
        yield node
    elif isinstance(node, RangeNode):
        yield node.selector
    elif isinstance(node, ParenNode | NegationNode):
        yield from _selectors(node.expr)
    elif isinstance(node, AggregateNode):
        yield from _selectors(node.expr)
        if node.param is not None:
            yield from _selectors(node.param)
    elif isinstance(node, CallNode):
        for arg in node.args:
            yield from _selectors(arg)
    elif isinstance(node, BinaryNode):
        yield from _selectors(node.lhs)
        yield from _selectors(node.rhs)

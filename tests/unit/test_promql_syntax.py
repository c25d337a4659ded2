"""The parse adapter (recorder.query.promql.syntax): our nodes from promql_parser's, and every
feature outside the subset refused with a message naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recorder.errors import QueryError
from recorder.query.promql.matchers import MatchOp
from recorder.query.promql.syntax import (
    AggregateNode,
    AtKind,
    BinaryNode,
    Card,
    RangeNode,
    SelectorNode,
    parse,
)


def test_a_selector_carries_its_name_matchers_offset_and_at() -> None:
    node = parse('m{a=~"b.*"} offset -1m @ 100.5')
    assert isinstance(node, SelectorNode)
    assert [(m.name, m.op, m.value) for m in node.matchers] == [
        ("__name__", MatchOp.EQUAL, "m"),
        ("a", MatchOp.REGEX, "b.*"),
    ]
    assert node.offset_ms == -60_000
    assert node.at is not None and (node.at.kind, node.at.time_ms) == (AtKind.TIME, 100_500)


def test_ranges_aggregations_and_binary_modifiers() -> None:
    node = parse("max_over_time(m[90s] @ start())")
    arg = node.args[0]  # type: ignore[union-attr]
    assert isinstance(arg, RangeNode) and arg.range_ms == 90_000
    assert arg.selector.at is not None and arg.selector.at.kind is AtKind.START
    agg = parse("topk by (a) (3, m)")
    assert isinstance(agg, AggregateNode)
    assert (agg.op, agg.grouping, agg.without, agg.param is not None) == (
        "topk",
        ("a",),
        False,
        True,
    )
    binary = parse("a / on(b) group_right(c) d")
    assert isinstance(binary, BinaryNode)
    assert (binary.card, binary.on, binary.matching, binary.include) == (
        Card.ONE_TO_MANY, True, ("b",), ("c",)
    )  # fmt: skip
    assert parse("a > bool ignoring(x) b") == BinaryNode(
        ">", parse("a"), parse("b"), True, Card.ONE_TO_ONE, False, ("x",), ()
    )


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("rate(m[5m])", "function rate()"),
        ("histogram_quantile(0.9, m)", "function histogram_quantile()"),
        ("timestamp(m)", "function timestamp()"),
        ("stddev(m)", "aggregation stddev()"),
        ('count_values("v", m)', "aggregation count_values()"),
        ("m[5m:1m]", "subqueries"),
        ('m{a="1" or b="2"}', "'or' inside a selector"),
    ],
)
def test_what_lies_outside_the_subset_is_refused_by_name(query: str, named: str) -> None:
    with pytest.raises(QueryError, match=r"not supported|not PromQL") as caught:
        parse(query)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "m{",
        "sum(",
        "1 > 2",
        "{}",
        'm{a=~"("}',
        "m\x00",
        "foo(m)",
        "m @ -5",
        "m offset 0s",
    ],
)
def test_syntax_errors_are_query_errors(query: str) -> None:
    with pytest.raises(QueryError):
        parse(query)


def test_sizes_and_nesting_are_bounded_before_the_parser_recurses() -> None:
    with pytest.raises(QueryError, match="outside its strings"):
        parse("+".join(["m"] * 5000))  # crashed the Rust parser's stack before the bound
    with pytest.raises(QueryError, match="nests deeper"):
        parse("-" * 500 + "m")
    with pytest.raises(QueryError, match="longer than 65536"):
        parse('m{a="' + "x" * 70_000 + '"}')
    long_string = 'm{a=~"' + "|".join(f"pod-{i}" for i in range(2000)) + '"}'
    assert isinstance(parse(long_string), SelectorNode)  # long regexes in strings are fine


def test_the_readmes_example_panel_queries_are_in_the_subset() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```promql\n", 1)[1].split("```", 1)[0]
    queries = re.split(r"\n(?! )", block.strip())
    assert len(queries) == 5
    for query in queries:
        text = query.replace("$namespace", "shop").replace("$workload", "web")
        parse(text.replace("$__range", "1d"))

"""What a PromQL query reaches, for access control: pinned namespaces, node-only selectors."""

from __future__ import annotations

import pytest

from recorder.query.promql.reach import Reach, matches_reach, query_reach


@pytest.mark.parametrize(
    ("query", "reach"),
    [
        ("recorder_container_cpu_usage_cores", Reach()),
        (
            'sum(recorder_container_cpu_usage_cores{namespace="a"})',
            Reach(frozenset("a"), False, True),
        ),
        (
            'x{namespace="a"} / on() max_over_time(y{namespace="b"}[5m])',
            Reach(frozenset("ab"), False, True),
        ),
        ('x{namespace="a"} + y', Reach(frozenset("a"), False, False)),
        ('x{namespace=~"a|b"}', Reach()),
        ("recorder_node_cpu_usage_cores", Reach(nodes=True)),
        ('{__name__=~"recorder_node_.*"}', Reach(nodes=True)),
        ('{__name__=~"recorder_.*"}', Reach()),
        ("-(topk(2, recorder_node_memory_working_set_bytes))", Reach(nodes=True)),
        ("1 + 2", Reach()),
        ("", Reach()),
        ("sum(", Reach()),
    ],
)
def test_query_reach(query: str, reach: Reach) -> None:
    assert query_reach(query) == reach


def test_matches_reach_joins_every_selector_and_skips_broken_ones() -> None:
    assert matches_reach(['{namespace="a"}', "recorder_node_cpu_usage_cores", "x{"]) == Reach(
        frozenset("a"), True, False
    )
    assert matches_reach([]) == Reach()

"""Binary operators (recorder.query.promql.binary): which value a comparison keeps, names
dropped, and Prometheus' errors for matching that is not one-to-one."""

from __future__ import annotations

import pytest

from recorder.query.promql.failures import ExecutionError
from tests.promql_support import instant, raw

T = 1_000_000
SERIES = [
    raw({"__name__": "m", "ns": "a", "pod": "p1"}, [(T, 1)]),
    raw({"__name__": "m", "ns": "a", "pod": "p2"}, [(T, 10)]),
    raw({"__name__": "t", "ns": "a"}, [(T, 100)]),
]


def values(query: str) -> list[tuple[dict[str, str], str]]:
    return [(r["metric"], r["value"][1]) for r in instant(SERIES, query, T)["result"]]


def test_a_comparison_keeps_the_vector_sides_value_and_name() -> None:
    assert values("2 < m") == [({"__name__": "m", "ns": "a", "pod": "p2"}, "10")]
    assert values("m > bool 2") == [
        ({"ns": "a", "pod": "p1"}, "0"),
        ({"ns": "a", "pod": "p2"}, "1"),
    ]


def test_group_left_and_group_right() -> None:
    assert values("m / on(ns) group_left t") == [
        ({"ns": "a", "pod": "p1"}, "0.01"),
        ({"ns": "a", "pod": "p2"}, "0.1"),
    ]
    # group_right: the "many" side's labels, the left ("one") side's value for a filter
    assert values("t > on(ns) group_right m") == [
        ({"__name__": "m", "ns": "a", "pod": "p1"}, "100"),
        ({"__name__": "m", "ns": "a", "pod": "p2"}, "100"),
    ]


def test_matching_that_is_not_one_to_one_fails() -> None:
    with pytest.raises(ExecutionError, match="many-to-one matching must be explicit"):
        instant(SERIES, "m + on(ns) t", T)
    with pytest.raises(ExecutionError, match="found duplicate series for the match group"):
        instant(SERIES, "t + on(ns) group_left m", T)
    twins = [*SERIES, raw({"__name__": "u", "ns": "a", "pod": "p1"}, [(T, 2)])]
    with pytest.raises(ExecutionError, match="same labelset"):
        instant(twins, "-{ns='a', pod='p1'}", T)  # m and u without their names


def test_arithmetic_follows_go_floats() -> None:
    assert values("m % 3") == [({"ns": "a", "pod": "p1"}, "1"), ({"ns": "a", "pod": "p2"}, "1")]
    assert values("-m % 3")[1][1] == "-1"  # math.Mod keeps the dividend's sign
    assert values("m ^ 0.5")[1][1] == "3.1622776601683795"


def test_set_operators_match_on_labels_without_the_name() -> None:
    others = [*SERIES, raw({"__name__": "n", "ns": "a", "pod": "p1"}, [(T, 7)])]

    def pods(query: str) -> list[tuple[str, str]]:
        found = instant(others, query, T)["result"]
        return [(r["metric"]["__name__"], r["metric"].get("pod", "")) for r in found]

    assert pods("m and n") == [("m", "p1")]
    assert pods("m unless n") == [("m", "p2")]
    assert pods("m or n") == [("m", "p1"), ("m", "p2")]  # n{p1} matches m{p1}: left out
    assert pods("n or m") == [("m", "p2"), ("n", "p1")]
    assert pods("m and on(ns) t") == [("m", "p1"), ("m", "p2")]
    assert pods("m unless ignoring(pod) n") == []

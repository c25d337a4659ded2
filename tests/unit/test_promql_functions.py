"""scalar, vector, clamp, label_replace and absent (recorder.query.promql.functions), and Go's
template expansion that label_replace uses."""

from __future__ import annotations

import re

import pytest

from recorder.query.promql.failures import ExecutionError
from recorder.query.promql.functions import expand
from tests.promql_support import instant, raw

T = 1_000_000
SERIES = [
    raw({"__name__": "m", "pod": "web-1"}, [(T, 3)]),
    raw({"__name__": "m", "pod": "web-2"}, [(T, 5)]),
]


@pytest.mark.parametrize(
    ("template", "expanded"),
    [
        ("$1", "web"),
        ("${1}x", "webx"),
        ("$1x", ""),  # the group named "1x": none
        ("$name-$2", "web-1"),
        ("${name}", "web"),
        ("$$1", "$1"),
        ("a$", "a$"),  # malformed: kept as text
        ("${1", "${1"),
        ("$3", ""),
        ("$01", ""),  # a leading zero is a name, not a number
    ],
)
def test_expand_is_gos(template: str, expanded: str) -> None:
    found = re.fullmatch(r"(?P<name>[a-z]+)-(\d)", "web-1")
    assert found is not None
    assert expand(template, found) == expanded


def test_label_replace_sets_removes_and_keeps_the_name() -> None:
    data = instant(SERIES, 'label_replace(m, "app", "$1", "pod", "(.*)-.*")', T)
    assert [r["metric"] for r in data["result"]] == [
        {"__name__": "m", "app": "web", "pod": "web-1"},
        {"__name__": "m", "app": "web", "pod": "web-2"},
    ]
    data = instant(SERIES, 'label_replace(m, "pod", "", "pod", "web-1")', T)
    assert {"__name__": "m"} in [r["metric"] for r in data["result"]]


def test_label_replace_refuses_invalid_names_and_collisions() -> None:
    with pytest.raises(ExecutionError, match="invalid destination label name"):
        instant(SERIES, 'label_replace(m, "a-b", "x", "pod", ".*")', T)
    with pytest.raises(ExecutionError, match="same labelset"):
        instant(SERIES, 'label_replace(m, "pod", "x", "pod", ".*")', T)


def test_scalar_is_nan_unless_exactly_one_sample() -> None:
    assert instant(SERIES, "scalar(m)", T)["result"][1] == "NaN"
    assert instant(SERIES, 'scalar(m{pod="web-2"})', T)["result"][1] == "5"


def test_clamp_drops_the_name() -> None:
    data = instant(SERIES, "clamp_min(m, 4)", T)
    assert [(r["metric"], r["value"][1]) for r in data["result"]] == [
        ({"pod": "web-1"}, "4"),
        ({"pod": "web-2"}, "5"),
    ]
    assert instant(SERIES, "clamp_max(m, NaN)", T)["result"][0]["value"][1] == "NaN"


def test_absent_takes_the_labels_of_equality_matchers() -> None:
    assert instant(SERIES, "absent(m)", T)["result"] == []
    data = instant(SERIES, 'absent(x{a="1", b=~"2", c="3", c!="4"})', T)
    assert data["result"][0]["metric"] == {"a": "1"}
    assert instant(SERIES, 'absent(sum(x{a="1"}))', T)["result"][0]["metric"] == {}

"""What the Prometheus API's endpoints answer (recorder.query.promql.endpoints), over series in
memory: parameters checked with Prometheus' words, match[] as series selectors."""

from __future__ import annotations

import pytest

from recorder.errors import QueryError
from recorder.query.promql import endpoints
from recorder.query.promql.source import MemorySource
from tests.promql_support import raw

SOURCE = MemorySource(
    [
        raw({"__name__": "a", "pod": "p1", "ns": "x"}, [(1000, 1), (2000, 2)]),
        raw({"__name__": "a", "pod": "p2", "ns": "y"}, [(5000, 3)]),
        raw({"__name__": "b", "node": "n1"}, [(1000, 4)]),
    ]
)


def test_series_labels_and_values_follow_match() -> None:
    assert endpoints.series(SOURCE, ['a{ns="x"}', "b"], None, None) == [
        {"__name__": "a", "ns": "x", "pod": "p1"},
        {"__name__": "b", "node": "n1"},
    ]
    assert endpoints.series(SOURCE, ["a"], "4", "6") == [{"__name__": "a", "ns": "y", "pod": "p2"}]
    assert endpoints.label_names(SOURCE, [], None, None) == ["__name__", "node", "ns", "pod"]
    assert endpoints.label_names(SOURCE, ["b"], None, None) == ["__name__", "node"]
    assert endpoints.label_values(SOURCE, "__name__", [], None, None) == ["a", "b"]
    assert endpoints.label_values(SOURCE, "pod", ["a"], None, "1.5") == ["p1"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: endpoints.series(SOURCE, [], None, None), r"no match\[\] parameter provided"),
        (lambda: endpoints.series(SOURCE, ["sum(a)"], None, None), "not a series selector"),
        (lambda: endpoints.series(SOURCE, ["a"], "5", "1"), "before start"),
        (lambda: endpoints.label_values(SOURCE, "a-b", [], None, None), "invalid label name"),
        (lambda: endpoints.query(SOURCE, "", None, 0), "query must not be empty"),
        (lambda: endpoints.query(SOURCE, "a", "yesterday", 0), 'invalid parameter "time"'),
        (lambda: endpoints.query_range(SOURCE, "a", "1", "2", None), 'invalid parameter "step"'),
        (lambda: endpoints.query_range(SOURCE, "a", None, "2", "1"), 'invalid parameter "start"'),
        (lambda: endpoints.query_range(SOURCE, "a", "2", "1", "1"), "before start"),
        (lambda: endpoints.query_range(SOURCE, "a", "0", "1", "0"), "zero or negative"),
        (lambda: endpoints.query_range(SOURCE, "a", "0", "11001", "1"), "11,000 points"),
        (lambda: endpoints.query_range(SOURCE, "a[1m]", "0", "1", "1"), "range vector"),
        (lambda: endpoints.query_range(SOURCE, '"s"', "0", "1", "1"), '"string"'),
    ],
)
def test_bad_parameters_are_bad_data(call: object, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        call()  # type: ignore[operator]


def test_a_range_query_has_at_most_11000_steps() -> None:
    data = endpoints.query_range(SOURCE, "1", "0", "10999", "1").data
    assert len(data["result"][0]["values"]) == 11_000


def test_metadata_names_the_eight_gauges() -> None:
    assert len(endpoints.metadata(None)) == 8
    assert endpoints.metadata("recorder_node_cpu_usage_cores") == {
        "recorder_node_cpu_usage_cores": [
            {
                "type": "gauge",
                "help": endpoints.metadata(None)["recorder_node_cpu_usage_cores"][0]["help"],
                "unit": "cores",
            }
        ]
    }
    assert endpoints.metadata("other") == {}

"""Output formats: exact JSON, CSV and kubectl-style tables from small hand-built results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from recorder.domain import (
    Agg,
    GroupSummary,
    HistoryResult,
    QueryKind,
    Resource,
    ResourceSummary,
    SeriesInfo,
    SeriesPoints,
    Tier,
    Value,
)
from recorder.query import formats, params

T0 = 1_714_557_600_000  # 2024-05-01T10:00:00Z
GIB = 2**30

RESULT = HistoryResult(
    series=[
        SeriesPoints(
            {"namespace": "shop", "pod": "web-1", "container": "app"},
            [(T0, 250_000_000), (T0 + 60_000, Fraction(1_000_000_001, 2))],
        ),
        SeriesPoints(
            {"namespace": "shop", "pod": "web-2", "container": "app"},
            [(T0, 1_500_000_000)],
        ),
    ],
    tier=Tier.RAW,
)
MEMORY = HistoryResult(
    series=[SeriesPoints({"node": "n1"}, [(T0, 512 * 2**20), (T0 + 500, Fraction(3, 2))])],
    tier=Tier.STATISTICS,
    relative_error=0.01,
)


def test_history_json_raw() -> None:
    assert formats.history_json(RESULT, Resource.CPU, "container", None, None) == {
        "status": "success",
        "data": {
            "resource": "cpu",
            "unit": "cores",
            "kind": "container",
            "tier": "raw",
            "series": [
                {
                    "labels": {"namespace": "shop", "pod": "web-1", "container": "app"},
                    "points": [[1714557600.0, 0.25], [1714557660.0, 0.5000000005]],
                },
                {
                    "labels": {"namespace": "shop", "pod": "web-2", "container": "app"},
                    "points": [[1714557600.0, 1.5]],
                },
            ],
        },
    }


def test_history_json_aggregated_with_a_percentile() -> None:
    data = formats.history_json(MEMORY, Resource.MEMORY, "node", 60_000, Agg.P95)["data"]
    assert data == {
        "resource": "memory",
        "unit": "bytes",
        "kind": "node",
        "tier": "chunk_statistics",
        "step": 60.0,
        "agg": "p95",
        "relativeError": 0.01,
        "series": [
            {"labels": {"node": "n1"}, "points": [[1714557600.0, 536870912], [1714557600.5, 1.5]]}
        ],
    }


def test_history_json_count_is_in_samples() -> None:
    data = formats.history_json(MEMORY, Resource.MEMORY, "node", 60_000, Agg.COUNT)["data"]
    assert data["unit"] == "samples"
    assert data["series"][0]["points"] == [[1714557600.0, 536870912], [1714557600.5, 1]]
    assert "relativeError" not in data


def _as_json_response(data: object) -> bytes:
    return JSONResponse(data).body


def test_history_json_bytes_is_what_json_response_makes_of_history_json() -> None:
    for resource in Resource:
        for result in (RESULT, MEMORY, HistoryResult([], Tier.RAW)):
            for step, agg in ((None, None), (60_000, Agg.P95), (60_000, Agg.COUNT)):
                assert formats.history_json_bytes(
                    result, resource, "container", step, agg
                ) == _as_json_response(
                    formats.history_json(result, resource, "container", step, agg)
                )


_values = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.fractions(min_value=0, max_value=2**63 - 1, max_denominator=10**6),
)
_series = st.builds(
    SeriesPoints,
    st.dictionaries(st.sampled_from(["namespace", "pod", "container"]), st.text(), min_size=1),
    st.lists(st.tuples(st.integers(min_value=0, max_value=2**45), _values), max_size=6),
)


@given(
    series=st.lists(_series, max_size=4),
    resource=st.sampled_from(Resource),
    agg=st.sampled_from([None, *Agg]),
)
def test_history_json_bytes_equals_the_json_response_on_any_result(
    series: list[SeriesPoints], resource: Resource, agg: Agg | None
) -> None:
    result = HistoryResult(series, Tier.RAW)
    step = None if agg is None else 30_000
    assert formats.history_json_bytes(result, resource, "pod", step, agg) == (
        _as_json_response(formats.history_json(result, resource, "pod", step, agg))
    )


_EXACT = 2**53  # float64 holds every integer below this exactly
_edge = st.sampled_from([0, 1, _EXACT - 1, _EXACT, _EXACT + 1, 2**63 - 1])
_same_kind_values = st.one_of(  # a series of one kind of value: rendered a column at a time
    st.lists(st.one_of(st.integers(min_value=0, max_value=2**63 - 1), _edge), min_size=1),
    st.lists(st.floats(min_value=0, allow_nan=False, allow_infinity=False), min_size=1),
    st.lists(
        st.one_of(
            st.fractions(min_value=0, max_value=2**63 - 1, max_denominator=10**8),
            _edge.map(Fraction),
            st.integers(1, 10**7).map(lambda d: Fraction(_EXACT - 1, d)),
            st.integers(1, 10**7).map(lambda d: Fraction(_EXACT + 1, d)),
        ),
        min_size=1,
    ),
)


@given(
    values=st.lists(_same_kind_values, min_size=1, max_size=3),
    resource=st.sampled_from(Resource),
    agg=st.sampled_from([None, *Agg]),
)
def test_series_of_one_kind_of_value_render_as_the_json_response(
    values: list[list[int | float | Fraction]], resource: Resource, agg: Agg | None
) -> None:
    """Ints, floats or Fractions whose parts float64 holds exactly are divided in numpy; the
    bytes are the same as one value at a time (and at the edge, 2**53, it goes one by one)."""
    series = [
        SeriesPoints({"pod": f"p{i}"}, [(T0 + j * 30_000, v) for j, v in enumerate(found)])
        for i, found in enumerate(values)
    ]
    result = HistoryResult(series, Tier.RAW)
    step = None if agg is None else 30_000
    assert formats.history_json_bytes(result, resource, "pod", step, agg) == (
        _as_json_response(formats.history_json(result, resource, "pod", step, agg))
    )


@pytest.mark.parametrize("resource", list(Resource))
@pytest.mark.parametrize(
    "values",
    [[5, 7_500_000_000, 10**15], [0.5, 2.0e9], [Fraction(1, 3), Fraction(10**12, 7)]],
)
def test_a_series_of_one_kind_of_value_is_not_displayed_one_by_one(
    monkeypatch: pytest.MonkeyPatch, resource: Resource, values: list[int | float | Fraction]
) -> None:
    one_by_one = formats.display
    calls = 0

    def counted(*args: object) -> int | float:
        nonlocal calls
        calls += 1
        return one_by_one(*args)  # type: ignore[arg-type]

    series = SeriesPoints({"pod": "p"}, [(T0 + i * 30_000, v) for i, v in enumerate(values)])
    result = HistoryResult([series], Tier.RAW)
    expected = _as_json_response(formats.history_json(result, resource, "pod", 30_000, Agg.AVG))
    monkeypatch.setattr(formats, "display", counted)
    assert formats.history_json_bytes(result, resource, "pod", 30_000, Agg.AVG) == expected
    assert calls == 0
    mixed = SeriesPoints({"pod": "p"}, [(T0, 5), (T0 + 30_000, 0.5)])
    formats.history_json_bytes(HistoryResult([mixed], Tier.RAW), resource, "pod", 30_000, None)
    assert calls == (2 if resource is Resource.CPU else 1)  # a memory int is kept as it is


def test_history_json_bytes_refuses_what_json_refuses() -> None:
    result = HistoryResult([SeriesPoints({"node": "n1"}, [(T0, float("inf"))])], Tier.RAW)
    with pytest.raises(ValueError, match="JSON compliant"):
        formats.history_json_bytes(result, Resource.MEMORY, "node", None, None)


def test_a_large_answer_is_held_once_while_it_is_rendered() -> None:
    """Rendering 20,000 series part by part holds the answer about once (one buffer handed
    back as it is), not as one small object per series and then their joined copy (2.7x)."""
    import tracemalloc

    parts = [
        [
            SeriesPoints(
                {"namespace": "shop", "pod": f"web-{p}-{i}", "container": "app"},
                [(T0 + k * 15_000, 100_000_000 + i + k) for k in range(4)],
            )
            for i in range(2_000)
        ]
        for p in range(10)
    ]
    envelope = HistoryResult([], Tier.RAW)
    size = len(
        formats.history_json_parts(parts, envelope, Resource.MEMORY, "container", None, None)
    )
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        body = formats.history_json_parts(parts, envelope, Resource.MEMORY, "container", None, None)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(body) == size > 3_000_000
    assert peak < 1.4 * size, (peak, size)
    assert json.loads(body)["data"]["series"][19_999]["labels"]["pod"] == "web-9-1999"


def test_history_csv_times_are_rfc3339() -> None:
    assert formats.history_csv(RESULT, Resource.CPU, Agg.AVG) == (
        "namespace,pod,container,timestamp,cpu_cores\n"
        "shop,web-1,app,2024-05-01T10:00:00Z,0.25\n"
        "shop,web-1,app,2024-05-01T10:01:00Z,0.5000000005\n"
        "shop,web-2,app,2024-05-01T10:00:00Z,1.5\n"
    )
    assert formats.history_csv(MEMORY, Resource.MEMORY, None, "rfc3339") == (
        "node,timestamp,memory_bytes\n"
        "n1,2024-05-01T10:00:00Z,536870912\n"
        "n1,2024-05-01T10:00:00.500Z,1.5\n"
    )


def test_history_csv_times_as_unix_seconds() -> None:
    assert formats.history_csv(RESULT, Resource.CPU, Agg.AVG, "unix") == (
        "namespace,pod,container,timestamp,cpu_cores\n"
        "shop,web-1,app,1714557600.0,0.25\n"
        "shop,web-1,app,1714557660.0,0.5000000005\n"
        "shop,web-2,app,1714557600.0,1.5\n"
    )
    assert formats.history_csv(MEMORY, Resource.MEMORY, None, "unix").splitlines()[2] == (
        "n1,1714557600.5,1.5"
    )


def test_history_csv_of_nothing_is_a_header() -> None:
    empty = HistoryResult([], Tier.RAW)
    assert formats.history_csv(empty, Resource.MEMORY, Agg.COUNT) == "timestamp,memory_samples\n"
    with pytest.raises(ValueError, match="unknown time format 'iso'"):
        formats.history_csv(empty, Resource.MEMORY, Agg.COUNT, "iso")


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (T0, "2024-05-01T10:00:00Z"),
        (T0 + 1, "2024-05-01T10:00:00.001Z"),
        (T0 + 999, "2024-05-01T10:00:00.999Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_rfc3339(ts_ms: int, text: str) -> None:
    assert formats.rfc3339(ts_ms) == text
    assert formats.time_value(ts_ms, "rfc3339") == text
    assert formats.time_value(ts_ms, "unix") == ts_ms / 1000


def test_history_table() -> None:
    assert formats.history_table(RESULT, Resource.CPU, None) == (
        "NAMESPACE   POD     CONTAINER   TIME                   CPU\n"
        "shop        web-1   app         2024-05-01T10:00:00Z   250m\n"
        "shop        web-1   app         2024-05-01T10:01:00Z   501m\n"
        "shop        web-2   app         2024-05-01T10:00:00Z   1500m\n"
    )


def test_history_table_of_memory_and_counts() -> None:
    assert formats.history_table(MEMORY, Resource.MEMORY, None) == (
        "NODE   TIME                       MEMORY\n"
        "n1     2024-05-01T10:00:00Z       512Mi\n"
        "n1     2024-05-01T10:00:00.500Z   0Mi\n"
    )
    assert formats.history_table(MEMORY, Resource.MEMORY, Agg.COUNT).splitlines()[1:] == [
        "n1     2024-05-01T10:00:00Z       536870912",
        "n1     2024-05-01T10:00:00.500Z   1",
    ]


def test_history_text_picks_the_format() -> None:
    as_json = formats.history_text("json", RESULT, Resource.CPU, QueryKind.CONTAINER, None, None)
    assert as_json.endswith("}\n") and as_json.count("\n") == 1
    assert json.loads(as_json) == formats.history_json(
        RESULT, Resource.CPU, "container", None, None
    )
    as_csv = formats.history_text("csv", RESULT, Resource.CPU, QueryKind.CONTAINER, None, None)
    assert as_csv == formats.history_csv(RESULT, Resource.CPU, None)
    as_table = formats.history_text("table", RESULT, Resource.CPU, QueryKind.CONTAINER, None, None)
    assert as_table == formats.history_table(RESULT, Resource.CPU, None)
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        formats.history_text("xml", RESULT, Resource.CPU, QueryKind.CONTAINER, None, None)


def test_series_json() -> None:
    found = [
        SeriesInfo({"node": "n1"}, T0, T0 + 1500),
        SeriesInfo({"namespace": "shop", "pod": "web-1"}, T0, T0, pod_labels={"app": "web"}),
    ]
    assert formats.series_json(found) == {
        "status": "success",
        "data": [
            {"labels": {"node": "n1"}, "firstSeen": 1714557600.0, "lastSeen": 1714557601.5},
            {
                "labels": {"namespace": "shop", "pod": "web-1"},
                "firstSeen": 1714557600.0,
                "lastSeen": 1714557600.0,
                "podLabels": {"app": "web"},
            },
        ],
    }


def test_summary_json() -> None:
    cpu = ResourceSummary(
        samples=10, avg=500_000_000.0, max=2_000_000_000, p95=1_500_000_000.0,
        integral=1_800 * 10**9 * 3600.0, coverage=1.0,
    )  # fmt: skip
    memory = ResourceSummary(
        samples=10, avg=GIB * 1.0, max=2 * GIB, p95=1.5 * GIB, integral=GIB * 7200.0, coverage=0.5
    )
    groups = [GroupSummary("shop", 2, cpu, memory), GroupSummary("idle", 1, None, None)]
    window = params.day_window(T0, T0 + 3_600_000)
    assert formats.summary_json(groups, "namespace", window, 0.01) == {
        "status": "success",
        "data": {
            "groupBy": "namespace",
            "start": 1714557600.0,
            "end": 1714561200.0,
            "relativeError": 0.01,
            "groups": [
                {
                    "group": "shop",
                    "series": 2,
                    "cpu": {
                        "avg": 0.5,
                        "avgOverWindow": 0.5,
                        "max": 2.0,
                        "p95": 1.5,
                        "coreHours": 1800.0,
                        "samples": 10,
                        "coverage": 1.0,
                    },
                    "memory": {
                        "avg": GIB * 1.0,
                        "avgOverWindow": GIB * 0.5,  # half the window covered
                        "max": 2 * GIB,
                        "p95": 1.5 * GIB,
                        "gibHours": 2.0,
                        "samples": 10,
                        "coverage": 0.5,
                    },
                },
                {"group": "idle", "series": 1, "cpu": None, "memory": None},
            ],
        },
    }


@dataclass(frozen=True)
class Row:
    labels: dict[str, str]
    cpu: Value
    memory: Value


PODS = [
    Row({"namespace": "shop", "pod": "web-1"}, 250_000_000, 300 * 2**20),
    Row({"namespace": "kube-system", "pod": "dns"}, Fraction(1, 3), 700 * 2**20),
    Row({"namespace": "shop", "pod": "web-2"}, 250_000_000, 100 * 2**20),
    Row({"namespace": "shop", "pod": "db"}, 1_250_000_000.5, 2 * GIB),
]


def test_rank_top_orders_by_name_as_kubectl_or_by_the_resource() -> None:
    by_name = formats.rank_top(PODS, None)
    assert [(r.labels["namespace"], r.labels["pod"]) for r in by_name] == [
        ("kube-system", "dns"),
        ("shop", "db"),
        ("shop", "web-1"),
        ("shop", "web-2"),
    ]
    by_cpu = formats.rank_top(PODS, Resource.CPU)
    assert [r.labels["pod"] for r in by_cpu] == ["db", "web-1", "web-2", "dns"]  # tie: names
    by_memory = formats.rank_top(PODS, Resource.MEMORY)
    assert [r.labels["pod"] for r in by_memory] == ["db", "dns", "web-1", "web-2"]
    assert formats.rank_top([], Resource.CPU) == []


def test_top_table_of_pods_across_namespaces() -> None:
    assert formats.top_table(PODS, nodes=False, all_namespaces=True) == (
        "NAMESPACE     NAME    CPU(cores)   MEMORY(bytes)\n"
        "shop          web-1   250m         300Mi\n"
        "kube-system   dns     1m           700Mi\n"
        "shop          web-2   250m         100Mi\n"
        "shop          db      1251m        2048Mi\n"
    )


def test_top_table_of_pods_in_one_namespace_and_of_nodes() -> None:
    assert formats.top_table(PODS[:1], nodes=False, all_namespaces=False) == (
        "NAME    CPU(cores)   MEMORY(bytes)\nweb-1   250m         300Mi\n"
    )
    nodes = [Row({"node": "n1"}, 3_000_000_000, 8 * GIB)]
    assert formats.top_table(nodes, nodes=True, all_namespaces=True) == (
        "NAME   CPU(cores)   MEMORY(bytes)\nn1     3000m        8192Mi\n"
    )


CONTAINERS = [
    Row({"cluster": "c", "namespace": "shop", "pod": "web-1", "container": "app"}, 10**8, 2**20),
    Row({"cluster": "c", "namespace": "shop", "pod": "web-1", "container": "envoy"}, 5, 2**21),
    Row({"cluster": "c", "namespace": "shop", "pod": "db", "container": "postgres"}, 10**9, 0),
]


def test_top_table_of_containers_as_kubectl_top_pod_containers() -> None:
    assert formats.top_table(CONTAINERS, nodes=False, all_namespaces=False, containers=True) == (
        "POD     NAME       CPU(cores)   MEMORY(bytes)\n"
        "web-1   app        100m         1Mi\n"
        "web-1   envoy      1m           2Mi\n"
        "db      postgres   1000m        0Mi\n"
    )
    assert formats.top_table(CONTAINERS[:1], nodes=False, all_namespaces=True, containers=True) == (
        "NAMESPACE   POD     NAME   CPU(cores)   MEMORY(bytes)\n"
        "shop        web-1   app    100m         1Mi\n"
    )


def test_top_table_sum_row_as_kubectl_top_pod_sum() -> None:
    # The exact values are added, then shown: 100m + 5 nanocores is 101m (not 100m + 1m).
    assert formats.top_table(
        CONTAINERS, nodes=False, all_namespaces=False, containers=True, total=True
    ) == (
        "POD     NAME       CPU(cores)   MEMORY(bytes)\n"
        "web-1   app        100m         1Mi\n"
        "web-1   envoy      1m           2Mi\n"
        "db      postgres   1000m        0Mi\n"
        "                   ________     ________\n"
        "                   1101m        3Mi\n"
    )
    assert formats.top_table(PODS[:2], nodes=False, all_namespaces=False, total=True) == (
        "NAME    CPU(cores)   MEMORY(bytes)\n"
        "web-1   250m         300Mi\n"
        "dns     1m           700Mi\n"
        "        ________     ________\n"
        "        251m         1000Mi\n"
    )


def test_top_table_without_headers_has_the_rows_widths() -> None:
    assert formats.top_table(PODS[1:2], nodes=False, all_namespaces=False, headers=False) == (
        "dns   1m   700Mi\n"
    )
    assert formats.table(["A"], [], headers=False) == ""


def test_top_table_names_the_cluster_when_rows_come_from_several() -> None:
    rows = [
        Row({"cluster": "a", "namespace": "shop", "pod": "web"}, 10**8, 2**20),
        Row({"cluster": "b", "namespace": "shop", "pod": "web"}, 2 * 10**8, 2**20),
    ]
    assert formats.top_table(rows, nodes=False, all_namespaces=False) == (
        "CLUSTER   NAME   CPU(cores)   MEMORY(bytes)\n"
        "a         web    100m         1Mi\n"
        "b         web    200m         1Mi\n"
    )


def test_top_window_line() -> None:
    assert formats.top_window(Agg.P95, T0 - 3_600_000, T0 + 1) == (
        "# p95 over 2024-05-01T09:00:00Z .. 2024-05-01T10:00:00.001Z\n"
    )


TYPED = [
    Row({"cluster": "c", "namespace": "shop", "pod": "web"}, Fraction(1, 2), Fraction(3, 2)),
    Row({"cluster": "c", "namespace": "shop", "pod": "db"}, 1_250_000_000, 2 * GIB),
    Row({"cluster": "c", "namespace": "shop", "pod": "p95"}, 123_456.5, 1024.25),
]


def test_top_json_typed_numbers_in_cores_and_bytes() -> None:
    text = formats.top_json(TYPED, Agg.AVG, T0 - 3_600_000, T0)
    assert text.endswith("]\n") and text.count("\n") == 1
    window = {"agg": "avg", "start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z"}
    assert json.loads(text) == [
        {
            "cluster": "c",
            "namespace": "shop",
            "pod": "web",
            **window,
            "cpu_cores": 5e-10,
            "memory_bytes": 1.5,
        },
        {
            "cluster": "c",
            "namespace": "shop",
            "pod": "db",
            **window,
            "cpu_cores": 1.25,
            "memory_bytes": 2 * GIB,
        },
        {
            "cluster": "c",
            "namespace": "shop",
            "pod": "p95",
            **window,
            "cpu_cores": 0.0001234565,
            "memory_bytes": 1024.25,
        },
    ]
    assert type(json.loads(text)[1]["memory_bytes"]) is int
    unix = json.loads(formats.top_json(TYPED[:1], Agg.MAX, T0 - 3_600_000, T0, "unix"))
    assert (unix[0]["agg"], unix[0]["start"], unix[0]["end"]) == ("max", 1714554000.0, 1714557600.0)
    assert formats.top_json([], Agg.AVG, T0, T0) == "[]\n"


def test_top_csv_has_the_json_fields() -> None:
    names = ("cluster", "namespace", "pod")
    assert formats.top_csv(TYPED, Agg.AVG, T0 - 3_600_000, T0, names=names) == (
        "cluster,namespace,pod,agg,start,end,cpu_cores,memory_bytes\n"
        "c,shop,web,avg,2024-05-01T09:00:00Z,2024-05-01T10:00:00Z,5e-10,1.5\n"
        "c,shop,db,avg,2024-05-01T09:00:00Z,2024-05-01T10:00:00Z,1.25,2147483648\n"
        "c,shop,p95,avg,2024-05-01T09:00:00Z,2024-05-01T10:00:00Z,0.0001234565,1024.25\n"
    )
    assert formats.top_csv(
        TYPED[1:2], Agg.P95, T0 - 3_600_000, T0, "unix", names=names, headers=False
    ) == ("c,shop,db,p95,1714554000.0,1714557600.0,1.25,2147483648\n")
    assert formats.top_csv([], Agg.AVG, T0, T0, names=("cluster", "node")) == (
        "cluster,node,agg,start,end,cpu_cores,memory_bytes\n"
    )


def test_table_aligns_left_and_trims_trailing_blanks() -> None:
    assert formats.table(["A", "LONGER"], [["xyz", ""], ["", "b"]]) == (
        "A     LONGER\nxyz\n      b\n"
    )


@pytest.mark.parametrize(
    ("resource", "value", "text"),
    [
        (Resource.CPU, 250_000_000, "250m"),
        (Resource.CPU, 250_000_001, "251m"),  # rounded up, as kubectl
        (Resource.CPU, Fraction(1, 2), "1m"),
        (Resource.MEMORY, 2**20 - 1, "0Mi"),  # truncated, as kubectl
        (Resource.MEMORY, 1.5 * 2**20, "1Mi"),
    ],
)
def test_kubectl_value(resource: Resource, value: Value, text: str) -> None:
    assert formats.kubectl_value(resource, value) == text


def test_a_snapped_window_says_so() -> None:
    day = 86_400_000
    asked_start = 1_714_521_600_000 + 13 * 3_600_000  # 2024-05-01T13:00:00Z
    window = params.day_window(asked_start, asked_start + 7 * day)
    assert (window.start_ms, window.end_ms) == (asked_start - 13 * 3_600_000, 1_715_126_399_999)
    note = (
        "the window was snapped to whole UTC days: 2024-05-01T00:00:00Z .. "
        "2024-05-07T23:59:59.999Z (asked: 2024-05-01T13:00:00Z .. 2024-05-08T13:00:00Z), so "
        "day rollups answer it"
    )
    assert formats.top_snapped(window) == f"# {note}\n"
    data = formats.summary_json([], "namespace", window, 0.01)["data"]
    assert data["start"] == 1_714_521_600.0 and data["end"] == 1_715_126_399.999
    assert data["snapped"] == {"start": asked_start / 1000, "end": asked_start / 1000 + 7 * 86400}
    assert data["note"] == note
    unsnapped = params.day_window(asked_start, asked_start + day)
    assert formats.top_snapped(unsnapped) == ""
    assert "note" not in formats.summary_json([], "pod", unsnapped, 0.01)["data"]


def test_kubectl_percent_as_kubectl_top_node() -> None:
    cpu, memory = Resource.CPU, Resource.MEMORY
    assert formats.kubectl_percent(cpu, 500_000_000, 2_000_000_000) == "25%"
    # usage is shown rounded up to a millicore, and divided as shown: 1001m of 2000m
    assert formats.kubectl_percent(cpu, 1_000_000_001, 2_000_000_000) == "50%"
    assert formats.kubectl_percent(cpu, 1_999_999_999, 2_000_000_000) == "100%"
    assert formats.kubectl_percent(cpu, 1_998_000_001, 2_000_000_000) == "99%"  # truncated
    assert formats.kubectl_percent(cpu, Fraction(1, 3), 1_000_000_000) == "0%"
    assert formats.kubectl_percent(memory, 3 * 2**30, 4 * 2**30) == "75%"
    assert formats.kubectl_percent(memory, 2**32 - 1, 2**32) == "99%"
    assert formats.kubectl_percent(memory, 10.5, None) == "<unknown>"
    assert formats.kubectl_percent(memory, 10, 0) == "<unknown>"


def test_top_table_of_nodes_with_allocatable_has_kubectl_percent_columns() -> None:
    nodes = [
        Row({"cluster": "c", "node": "n1"}, 3_000_000_000, 8 * GIB),
        Row({"cluster": "c", "node": "n2"}, 1, 1),
    ]
    assert formats.top_table(
        nodes, nodes=True, all_namespaces=True, allocatable={("c", "n1"): (4_000_000_000, 16 * GIB)}
    ) == (
        "NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)\n"
        "n1     3000m        75%         8192Mi          50%\n"
        "n2     1m           <unknown>   0Mi             <unknown>\n"
    )


def test_top_json_and_csv_of_nodes_with_allocatable() -> None:
    nodes = [
        Row({"cluster": "c", "node": "n1"}, 3_000_000_000, 8 * GIB),
        Row({"cluster": "c", "node": "n2"}, 1, 1),
    ]
    allocatable = {("c", "n1"): (4_000_000_000, 16 * GIB)}
    records = json.loads(formats.top_json(nodes, Agg.LAST, 0, 1000, "unix", allocatable))
    assert [
        (
            r["cpu_allocatable_cores"],
            r["cpu_percent"],
            r["memory_allocatable_bytes"],
            r["memory_percent"],
        )
        for r in records
    ] == [(4.0, 75, 16 * GIB, 50), (None, None, None, None)]
    text = formats.top_csv(
        nodes, Agg.LAST, 0, 1000, "unix", names=["cluster", "node"], allocatable=allocatable
    )
    assert text.splitlines()[0].endswith(
        ",cpu_allocatable_cores,cpu_percent,memory_allocatable_bytes,memory_percent"
    )
    assert text.splitlines()[2].endswith(",,,,")
    assert "cpu_percent" not in formats.top_json(nodes, Agg.LAST, 0, 1000)

"""The fast renderer's pieces: value formatting exactly like prometheus-client, the label
cache, and the cardinality controls."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from recorder.cli import build_parser
from recorder.commands import settings_from_args
from recorder.domain import Kind, Sample, SeriesKey
from recorder.exporter import DataCollector, ExportFilter, RecorderRegistry, SnapshotHolder
from recorder.exporter.render import (
    SampleLines,
    format_bytes,
    format_cores,
    format_float,
)
from recorder.settings import load_settings


@given(st.floats(allow_nan=True, allow_infinity=True))
@example(1e6)
@example(999_999.9999999999)
@example(1.7179869184e10)
@example(1e16)
@example(123456789012345680.0)
@example(-1e7)
@example(0.0)
@example(-0.0)
def test_format_float_is_float_to_go_string(value: float) -> None:
    assert format_float(value) == floatToGoString(value)


@given(st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.integers(0, 10**8)))
@example(0)
@example(999_999)
@example(1_000_000)
@example(100_000_000)
@example(2**53 - 1)
@example(2**53)
@example(2**53 + 1)
@example(10**16)
def test_format_bytes_is_float_to_go_string_of_the_integer(value: int) -> None:
    assert format_bytes(value) == floatToGoString(value)


@given(st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.integers(0, 10**12)))
@example(1)
@example(10**15 - 1)
@example(10**15)
@example(-(10**15) + 1)
@example(487_558_164)
def test_format_cores_is_float_to_go_string_of_the_core_value(nanocores: int) -> None:
    assert format_cores(nanocores) == floatToGoString(nanocores / 1e9)


def _container(namespace: str, pod: str, cpu: int = 1, memory: int = 1) -> Sample:
    return Sample(SeriesKey.for_container(namespace, pod, "app"), 1, 1, cpu, memory)


@given(st.lists(st.integers(min_value=-(2**60), max_value=2**60), min_size=1, max_size=20))
def test_memory_lines_vectorized_and_per_value_agree(values: list[int]) -> None:
    samples = [_container("ns", f"p{i}", memory=v) for i, v in enumerate(values)]
    _, memory = SampleLines(ExportFilter()).render(Kind.CONTAINER, "c", "m", samples)
    expected = "".join(
        f'm{{cluster="default",container="app",namespace="ns",pod="p{i}"}} {floatToGoString(v)}\n'
        for i, v in enumerate(values)
    )
    assert b"".join(memory).decode() == expected


def _render(export_filter: ExportFilter, samples: list[Sample]) -> str:
    holder = SnapshotHolder()
    holder.publish(Kind.NODE, [Sample(SeriesKey.for_node("n1"), 1, 1, 2, 3)], 1)
    holder.publish(Kind.CONTAINER, samples, 1)
    registry = RecorderRegistry(holder, export_filter, process_collectors=False)
    registry.own = CollectorRegistry()
    ours = b"".join(registry.exposition(openmetrics=False, gzip=False))
    reference = CollectorRegistry()
    reference.register(DataCollector(holder, export_filter))
    assert ours == generate_latest(reference)
    return ours.decode()


SAMPLES = [
    _container("kube-system", "dns"),
    _container("team-a", "web"),
    _container("team-b", "api"),
    _container("shop", "cart"),
]


def _pods(text: str) -> set[str]:
    return {
        line.split('pod="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("recorder_container_cpu")
    }


@pytest.mark.parametrize(
    ("export_filter", "pods"),
    [
        (ExportFilter(), {"dns", "web", "api", "cart"}),
        (ExportFilter(namespaces=("team-*",)), {"web", "api"}),
        (ExportFilter(exclude_namespaces=("kube-*", "shop")), {"web", "api"}),
        (
            ExportFilter(namespaces=("team-*", "shop"), exclude_namespaces=("team-b",)),
            {"web", "cart"},
        ),
    ],
)
def test_namespace_allow_and_deny_lists(export_filter: ExportFilter, pods: set[str]) -> None:
    text = _render(export_filter, SAMPLES)
    assert _pods(text) == pods
    assert 'recorder_node_cpu_usage_cores{cluster="default",node="n1"}' in text


def test_container_gauges_can_be_switched_off() -> None:
    text = _render(ExportFilter(containers=False), SAMPLES)
    assert "recorder_container" not in text
    assert 'recorder_node_memory_working_set_bytes{cluster="default",node="n1"} 3.0' in text


def test_cardinality_controls_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER_METRICS_EXCLUDE_NAMESPACE", "kube-*, shop")
    monkeypatch.setenv("RECORDER_METRICS_CONTAINERS", "false")
    settings = load_settings()
    assert settings.metrics_exclude_namespace == ["kube-*", "shop"]
    assert settings.metrics_containers is False
    args = build_parser().parse_args(
        [
            "run",
            "--metrics-namespace",
            "team-*",
            "--metrics-namespace",
            "shop",
            "--metrics-containers",
        ]
    )
    flagged = settings_from_args(args)
    assert flagged.metrics_namespace == ["team-*", "shop"]
    assert flagged.metrics_containers is True
    assert flagged.metrics_exclude_namespace == ["kube-*", "shop"]
    demo = settings_from_args(build_parser().parse_args(["demo", "--no-metrics-containers"]))
    assert demo.metrics_containers is False

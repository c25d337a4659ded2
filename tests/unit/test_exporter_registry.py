"""Exact exposition output of the data gauges: literal bytes for a small snapshot (every series
labelled with its cluster, first), and our fast renderer against prometheus-client's own
rendering of the same data on a fresh registry."""

from __future__ import annotations

import gzip
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from recorder.domain import DEFAULT_CLUSTER, Kind, Sample, SeriesKey
from recorder.exporter import DataCollector, RecorderRegistry, SnapshotHolder, build_registry
from recorder.exporter.registry import GzipAssembly, crc32_combine, deflate


def fresh(holder: SnapshotHolder) -> CollectorRegistry:
    """A fresh prometheus-client registry holding only the data collector."""
    registry = CollectorRegistry()
    registry.register(DataCollector(holder))
    return registry


def data_only(holder: SnapshotHolder) -> RecorderRegistry:
    registry = RecorderRegistry(holder, process_collectors=False)
    registry.own = CollectorRegistry()  # no self-metrics: only the data families
    return registry


def ours(registry: RecorderRegistry, *, openmetrics: bool = False) -> bytes:
    return b"".join(registry.exposition(openmetrics=openmetrics, gzip=False))


CLUSTER = "prod-eu-1"


def node(name: str, cpu: int, memory: int, cluster: str = CLUSTER) -> Sample:
    return Sample(SeriesKey.for_node(name, cluster), 1, 1, cpu, memory)


def container(
    namespace: str, pod: str, name: str, cpu: int, memory: int, cluster: str = CLUSTER
) -> Sample:
    return Sample(SeriesKey.for_container(namespace, pod, name, cluster), 1, 1, cpu, memory)


EXPECTED_TEXT = (
    "# HELP recorder_node_cpu_usage_cores CPU usage of the node in cores (average over the "
    "Metrics API window), from metrics.k8s.io NodeMetrics usage.cpu\n"
    "# TYPE recorder_node_cpu_usage_cores gauge\n"
    'recorder_node_cpu_usage_cores{cluster="prod-eu-1",node="10.0.2.15"} 0.487558164\n'
    "# HELP recorder_node_memory_working_set_bytes Memory working set of the node in bytes, "
    "from metrics.k8s.io NodeMetrics usage.memory\n"
    "# TYPE recorder_node_memory_working_set_bytes gauge\n"
    "recorder_node_memory_working_set_bytes"
    '{cluster="prod-eu-1",node="10.0.2.15"} 7.49785088e+08\n'
    "# HELP recorder_container_cpu_usage_cores CPU usage of the container in cores (average "
    "over the Metrics API window), from metrics.k8s.io PodMetrics containers[].usage.cpu\n"
    "# TYPE recorder_container_cpu_usage_cores gauge\n"
    "recorder_container_cpu_usage_cores"
    '{cluster="prod-eu-1",container="app",namespace="shop",pod="web"} 1.5\n'
    "recorder_container_cpu_usage_cores"
    '{cluster="prod-eu-1",container="app",namespace="shop",pod="old"} 0.0\n'
    "# HELP recorder_container_memory_working_set_bytes Memory working set of the container "
    "in bytes, from metrics.k8s.io PodMetrics containers[].usage.memory\n"
    "# TYPE recorder_container_memory_working_set_bytes gauge\n"
    "recorder_container_memory_working_set_bytes"
    '{cluster="prod-eu-1",container="app",namespace="shop",pod="web"} 1.7179869184e+10\n'
    "recorder_container_memory_working_set_bytes"
    '{cluster="prod-eu-1",container="app",namespace="shop",pod="old"} 1.0\n'
)


def small_holder() -> SnapshotHolder:
    holder = SnapshotHolder()
    holder.publish(Kind.NODE, [node("10.0.2.15", 487_558_164, 732_212 * 1024)], 1)
    holder.publish(
        Kind.CONTAINER,
        [
            container("shop", "web", "app", 1_500_000_000, 16 * 2**30),
            container("shop", "old", "app", 0, 1),
        ],
        1,
    )
    return holder


def test_exact_text_exposition_and_vanished_pods_vanish() -> None:
    holder = small_holder()
    assert generate_latest(fresh(holder)).decode() == EXPECTED_TEXT
    registry = data_only(holder)
    assert ours(registry).decode() == EXPECTED_TEXT

    holder.publish(Kind.CONTAINER, [container("shop", "web", "app", 1, 1)], 2)
    assert 'pod="old"' not in ours(registry).decode()
    assert 'pod="old"' not in generate_latest(fresh(holder)).decode()


def test_exact_openmetrics_exposition_has_units_and_eof() -> None:
    holder = small_holder()
    expected = generate_openmetrics(fresh(holder))
    assert ours(data_only(holder), openmetrics=True) == expected
    text = expected.decode()
    assert "# UNIT recorder_node_cpu_usage_cores cores\n" in text
    assert "# UNIT recorder_container_memory_working_set_bytes bytes\n" in text
    assert text.endswith(
        '{cluster="prod-eu-1",container="app",namespace="shop",pod="old"} 1.0\n# EOF\n'
    )


def test_the_whole_registry_renders_like_prometheus_client_in_both_formats() -> None:
    holder = small_holder()
    registry, metrics = build_registry(holder, process_collectors=False)
    metrics.polls.labels(resource="pods").inc()
    metrics.poll_errors.labels(resource="nodes", reason="forbidden").inc()
    metrics.api_up.set(1)
    for openmetrics in (False, True):
        body = ours(registry, openmetrics=openmetrics)  # renders, then observes the render time
        generic = generate_openmetrics(registry) if openmetrics else generate_latest(registry)
        assert body == generic
        assert gzip.decompress(b"".join(registry.exposition(openmetrics=openmetrics, gzip=True)))
    assert b"recorder_metrics_api_up 1.0\n" in ours(registry)


def test_a_snapshot_is_rendered_once_and_reused_by_later_scrapes() -> None:
    holder = small_holder()
    registry = data_only(holder)
    first = registry.exposition(openmetrics=False, gzip=False)
    again = registry.exposition(openmetrics=False, gzip=False)
    assert all(a is b for a, b in zip(first[:-1], again[:-1], strict=True))
    zipped = registry.exposition(openmetrics=False, gzip=True)
    assert zipped[0] is registry.exposition(openmetrics=False, gzip=True)[0]
    assert gzip.decompress(b"".join(zipped)) == b"".join(first)
    holder.publish(Kind.NODE, [node("10.0.2.15", 1, 1)], 2)
    changed = ours(registry)
    assert b'recorder_node_cpu_usage_cores{cluster="prod-eu-1",node="10.0.2.15"} 1e-09\n' in changed


def test_series_of_clusters_stay_apart_and_unnamed_ones_are_in_the_default_cluster() -> None:
    holder = SnapshotHolder()
    holder.publish(Kind.NODE, [node("n1", 1, 1), node("n1", 2, 2, cluster=DEFAULT_CLUSTER)], 1)
    holder.publish(Kind.CONTAINER, [Sample(SeriesKey.for_container("a", "b", "c"), 1, 1, 3, 3)], 1)
    text = ours(data_only(holder)).decode()
    assert text == generate_latest(fresh(holder)).decode()
    assert 'recorder_node_memory_working_set_bytes{cluster="prod-eu-1",node="n1"} 1.0\n' in text
    assert 'recorder_node_memory_working_set_bytes{cluster="default",node="n1"} 2.0\n' in text
    assert (
        'recorder_container_memory_working_set_bytes{cluster="default",container="c",'
        'namespace="a",pod="b"} 3.0\n'
    ) in text


# Label values with everything that needs escaping, non-ASCII, and plain names.
label_values = st.one_of(
    st.sampled_from(["", "a", "kube-system", 'quo"te', "back\\slash", "new\nline", "ünï"]),
    st.text(max_size=12),
)
nanocores = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=-(10**16), max_value=10**20),
)
memory = st.one_of(
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=-(2**60), max_value=2**70),
)


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[list[Sample], list[Sample]]:
    nodes = draw(
        st.lists(
            st.builds(node, label_values, nanocores, memory, label_values),
            max_size=6,
            unique_by=lambda s: s.key,
        )
    )
    containers = draw(
        st.lists(
            st.builds(
                container,
                label_values,
                label_values,
                label_values,
                nanocores,
                memory,
                st.one_of(st.just(CLUSTER), label_values),
            ),
            max_size=12,
            unique_by=lambda s: s.key,
        )
    )
    return nodes, containers


@settings(max_examples=150, deadline=None)
@given(first=snapshots(), second=snapshots())
def test_fast_renderer_matches_a_fresh_prometheus_client_registry(
    first: tuple[list[Sample], list[Sample]], second: tuple[list[Sample], list[Sample]]
) -> None:
    holder = SnapshotHolder()
    registry = data_only(holder)
    registry._sample_lines.SLICE = 3  # several slices per kind, and a partial last one
    for generation, (nodes, containers) in enumerate((first, second, first)):
        holder.publish(Kind.NODE, nodes, generation)
        holder.publish(Kind.CONTAINER, containers, generation)
        assert ours(registry) == generate_latest(fresh(holder))
        assert ours(registry, openmetrics=True) == generate_openmetrics(fresh(holder))


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_crc32_combine_is_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


@settings(max_examples=50)
@given(st.lists(st.lists(st.binary(max_size=200), max_size=4), max_size=5), st.binary())
def test_segments_and_a_tail_are_one_gzip_member_of_their_text(
    texts: list[list[bytes]], tail: bytes
) -> None:
    assembly = GzipAssembly.of(deflate(chunks) for chunks in texts)
    whole = b"".join(b"".join(chunks) for chunks in texts) + tail
    zipped = assembly.gzip_body(tail)
    raw = b"".join(zipped)
    assert len(raw) == zipped.length
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflater.decompress(raw) + inflater.flush() == whole
    assert inflater.eof and inflater.unused_data == b""
    text = assembly.text_body(tail)
    assert b"".join(text) == whole and text.length == len(whole)

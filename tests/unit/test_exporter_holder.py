"""When polls keep failing for 3 intervals, the data gauges are withdrawn (not frozen) and
recorder_metrics_api_up is 0; a successful poll brings them back. Time is a fake clock."""

from __future__ import annotations

from pathlib import Path

from recorder.buffer import WriteQueue
from recorder.domain import Batch, Kind, Sample, SeriesKey, WriteResult
from recorder.errors import MetricsApiUnavailable
from recorder.exporter import RecorderRegistry, SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.poller import Poller
from tests.kube_support import PodsWhole

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
INTERVAL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # after the fixtures: their samples are not in the future

    def __call__(self) -> float:
        return self.now


class Source(PodsWhole):
    """The odd real-world fixtures, behind switches that make each list call fail."""

    def __init__(self) -> None:
        self.nodes_down = self.pods_down = False

    def list_nodes(self) -> bytes:
        if self.nodes_down:
            raise MetricsApiUnavailable("metrics-server is down", status=503)
        return (FIXTURES / "odd_nodes.json").read_bytes()

    def list_pods(self, namespace: str | None = None) -> bytes:
        if self.pods_down:
            raise MetricsApiUnavailable("metrics-server is down", status=503)
        return (FIXTURES / "odd_pods.json").read_bytes()


class Sink:
    def write(self, batch: Batch, *, now_ms: int) -> WriteResult:
        return WriteResult(len(batch.samples), 0)

    def prepare(self) -> None:
        pass

    def ready(self) -> None:
        pass


def scrape(registry: RecorderRegistry) -> str:
    return b"".join(registry.exposition(openmetrics=False, gzip=False)).decode()


def data_lines(text: str, kind: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"recorder_{kind}_")]


def setup() -> tuple[Clock, Source, Poller, RecorderRegistry]:
    clock = Clock()
    source = Source()
    holder = SnapshotHolder(INTERVAL, clock=clock)
    registry, metrics = build_registry(holder, process_collectors=False)
    return (
        clock,
        source,
        Poller(source, Flusher(WriteQueue(), Sink(), metrics), holder, metrics, clock=clock),
        registry,
    )


def test_three_failed_intervals_withdraw_the_data_and_api_up_is_zero() -> None:
    clock, source, poller, registry = setup()
    assert poller.poll_once().ok
    before = scrape(registry)
    assert data_lines(before, "node") and data_lines(before, "container")
    assert registry.get_sample_value("recorder_metrics_api_up") == 1

    source.nodes_down = source.pods_down = True
    for failed in (1, 2):
        clock.now += INTERVAL
        assert not poller.poll_once().ok
        # Still shown, unchanged, until the third failed poll: one bad scrape of
        # metrics-server is no reason to drop every series.
        assert data_lines(scrape(registry), "container") == data_lines(before, "container"), failed
        assert registry.get_sample_value("recorder_metrics_api_up") == 0

    clock.now += INTERVAL - 0.001
    assert data_lines(scrape(registry), "node") == data_lines(before, "node")
    clock.now += 0.001
    poller.poll_once()
    withdrawn = scrape(registry)
    assert data_lines(withdrawn, "node") == data_lines(withdrawn, "container") == []
    # The families are still described, only without samples.
    assert "# TYPE recorder_container_cpu_usage_cores gauge\n" in withdrawn
    assert "recorder_metrics_api_up 0.0\n" in withdrawn

    source.nodes_down = source.pods_down = False
    clock.now += INTERVAL
    assert poller.poll_once().ok
    back = scrape(registry)
    assert data_lines(back, "node") == data_lines(before, "node")
    assert data_lines(back, "container") == data_lines(before, "container")
    assert "recorder_metrics_api_up 1.0\n" in back


def test_only_the_failing_kind_is_withdrawn() -> None:
    clock, source, poller, registry = setup()
    poller.poll_once()
    source.pods_down = True
    for _ in range(3):
        clock.now += INTERVAL
        poller.poll_once()
    text = scrape(registry)
    assert data_lines(text, "node")
    assert data_lines(text, "container") == []
    assert "recorder_metrics_api_up 0.0\n" in text


def test_api_up_drops_to_zero_even_when_no_poll_reports_the_failure() -> None:
    """A poll stuck in a hanging request sets nothing; the age of the data still counts."""
    clock = Clock()
    holder = SnapshotHolder(INTERVAL, clock=clock)
    registry, metrics = build_registry(holder, process_collectors=False)
    holder.publish(Kind.NODE, [Sample(SeriesKey.for_node("n1"), 1, 1, 1, 1)], 1)
    metrics.api_up.set(1)
    clock.now += 3 * INTERVAL - 1
    assert registry.get_sample_value("recorder_metrics_api_up") == 1
    assert holder.view().nodes is not None
    clock.now += 1
    assert registry.get_sample_value("recorder_metrics_api_up") == 0
    assert holder.view().nodes is None
    assert data_lines(scrape(registry), "node") == []


def test_without_an_interval_nothing_is_withdrawn() -> None:
    clock = Clock()
    holder = SnapshotHolder(clock=clock)
    holder.publish(Kind.NODE, [Sample(SeriesKey.for_node("n1"), 1, 1, 1, 1)], 1)
    clock.now += 10**9
    assert holder.view().fresh and holder.view().nodes is not None

"""The service's ``/metrics`` (relayed across its two processes) is valid in both formats and
holds the same data as the in-process exposition; the lines cross the pipe and stay on the
server compressed, and the worker renders only the newest snapshot."""

from __future__ import annotations

import gc
import gzip
import multiprocessing
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from recorder.domain import Kind, Sample, SeriesKey
from recorder.exporter import (
    KindLines,
    LinePublisher,
    LineRenderer,
    OwnExposition,
    RelayRegistry,
    SnapshotHolder,
    receive,
    send_lines,
)
from recorder.exporter.registry import deflate
from recorder.exporter.relay import LinesFollow
from recorder.exporter.render import SampleLines
from recorder.store import open_store
from tests.metrics_support import CLUSTER, relayed_registry

WORKER = OwnExposition(
    b"# HELP recorder_polls_total Polls.\n# TYPE recorder_polls_total counter\n"
    b'recorder_polls_total{resource="pods"} 3.0\n',
    b"# HELP recorder_polls Polls.\n# TYPE recorder_polls counter\n"
    b'recorder_polls_total{resource="pods"} 3.0\n',
)


def data_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(("recorder_node_", "recorder_container_"))
    ]


def body(relay: RelayRegistry, *, openmetrics: bool = False, compress: bool = False) -> bytes:
    return b"".join(relay.exposition(openmetrics=openmetrics, gzip=compress))


def scrape(relay: RelayRegistry, *, openmetrics: bool = False, compress: bool = False) -> str:
    raw = body(relay, openmetrics=openmetrics, compress=compress)
    return (gzip.decompress(raw) if compress else raw).decode()


def promtool(text: bytes) -> None:
    linted = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert linted.returncode == 0, (linted.stdout + linted.stderr).decode()


def containers(count: int, generation: int = 0) -> list[Sample]:
    return [
        Sample(
            SeriesKey.for_container(f"ns-{i % 7}", f"pod-{i}", "app"),
            1_000,
            15_000,
            1_000_000 * (i % 900) + generation,
            (i % 1000 + 1) * 1_048_576 + generation,
        )
        for i in range(count)
    ]


def nodes(count: int, generation: int = 0) -> list[Sample]:
    return [
        Sample(SeriesKey.for_node(f"node-{i}"), 1_000, 15_000, 10**9 + generation, 2**33)
        for i in range(count)
    ]


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> RelayRegistry:
    """A relay serving what a worker rendered of 3,000 containers and 40 nodes, in slices of
    256 samples (so each family's segment is compressed from many chunks); no process
    collectors, so that two scrapes of it are the same bytes."""
    monkeypatch.setattr(SampleLines, "SLICE", 256)
    renderer = LineRenderer()
    relay = RelayRegistry(30.0, process_collectors=False)
    for kind, samples in ((Kind.NODE, nodes(40)), (Kind.CONTAINER, containers(3_000))):
        lines = renderer.render(kind, samples)
        assert lines is not None
        relay.publish(lines)
    relay.set_worker_metrics(WORKER)
    return relay


def test_relayed_body_equals_the_in_process_one_and_parses_strictly(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'rec.db'}")
    store.migrate()
    relay, worker = relayed_registry(store)
    store.close()
    relayed = scrape(relay)
    local = b"".join(worker.exposition(openmetrics=False, gzip=False)).decode()
    assert data_lines(local) and data_lines(relayed) == data_lines(local)
    assert all(f'{{cluster="{CLUSTER}",' in line for line in data_lines(relayed))
    for compress in (False, True):
        openmetrics = scrape(relay, openmetrics=True, compress=compress)
        assert openmetrics.endswith("# EOF\n") and openmetrics.count("# EOF") == 1
        names = [family.name for family in parse_openmetrics(openmetrics)]  # strict: raises
        assert len(names) == len(set(names))
        assert data_lines(openmetrics) == data_lines(local)
    promtool(relayed.encode())


@pytest.mark.parametrize("openmetrics", [False, True])
def test_gzip_body_is_the_text_body_byte_for_byte_and_both_lint(
    relay: RelayRegistry, openmetrics: bool
) -> None:
    text = body(relay, openmetrics=openmetrics)
    zipped = body(relay, openmetrics=openmetrics, compress=True)
    assert gzip.decompress(zipped) == text
    assert len(text) > 10 * len(zipped) / 2  # compressed, and the lines are all there
    assert len(data_lines(text.decode())) == 2 * (40 + 3_000)
    if openmetrics:
        assert text.endswith(b"# EOF\n") and text.count(b"# EOF") == 1
        families = list(parse_openmetrics(text.decode()))  # strict: raises
    else:
        families = list(parse_text(text.decode()))
        promtool(text)
    samples = {f.name: len(f.samples) for f in families}
    assert samples["recorder_container_cpu_usage_cores"] == 3_000
    assert samples["recorder_node_memory_working_set_bytes"] == 40


def test_the_body_is_one_gzip_member_of_many_segments(relay: RelayRegistry) -> None:
    assembly = relay._data_body(openmetrics=False)
    assert len(assembly.segments) == 8  # four families: headers and lines of each
    zipped = body(relay, compress=True)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = inflater.decompress(zipped) + inflater.flush()
    assert inflater.eof and inflater.unused_data == b""
    assert text == body(relay) == gzip.decompress(zipped)


def test_a_text_scrape_is_inflated_piece_by_piece(
    relay: RelayRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("recorder.exporter.registry.PIECE_BYTES", 4096)
    streamed = relay.exposition(openmetrics=False, gzip=False)
    pieces = list(streamed)
    assert len(pieces) > 20 and max(map(len, pieces)) <= 4096 + len(WORKER.text)
    assert streamed.length == sum(map(len, pieces))
    zipped = relay.exposition(openmetrics=False, gzip=True)
    pieces = list(zipped)
    assert max(map(len, pieces)) <= 4096 and sum(map(len, pieces)) == zipped.length
    assert gzip.decompress(b"".join(pieces)) == b"".join(
        relay.exposition(openmetrics=False, gzip=False)
    )


def _reachable_bytes(root: object) -> list[bytes]:
    """Every ``bytes`` object reachable from ``root`` through containers and instances."""
    found: list[bytes] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type | type(gc) | str | int | float):
            continue
        seen.add(id(item))
        if isinstance(item, bytes):
            found.append(item)
            continue
        stack.extend(gc.get_referents(item))
    return found


def test_the_server_keeps_the_lines_compressed_only(relay: RelayRegistry) -> None:
    text = body(relay) + body(relay, openmetrics=True) + body(relay, compress=True)
    kept = _reachable_bytes(relay)
    assert sum(map(len, kept)) < len(text) / 10
    assert not any(b"recorder_container_cpu_usage_cores{" in b for b in kept)


def test_lines_cross_the_pipe_as_raw_bytes_behind_a_small_header() -> None:
    lines = LineRenderer().render(Kind.CONTAINER, containers(500))
    assert lines is not None
    parent, child = multiprocessing.Pipe()
    sender = threading.Thread(target=lambda: (send_lines(child, lines), child.send("next")))
    sender.start()
    header = parent.recv()
    assert header == LinesFollow(
        Kind.CONTAINER, (lines.cpu.crc, lines.cpu.length), (lines.memory.crc, lines.memory.length)
    )
    assert parent.recv_bytes() == lines.cpu.data  # the segment itself, not a pickle of it
    assert parent.recv_bytes() == lines.memory.data
    assert parent.recv() == "next"
    sender.join()
    sender = threading.Thread(target=lambda: (send_lines(child, lines), child.send("next")))
    sender.start()
    assert receive(parent) == lines
    assert receive(parent) == "next"
    sender.join()


def test_the_publisher_renders_only_the_newest_snapshot_of_a_burst() -> None:
    holder = SnapshotHolder()
    sent: list[KindLines] = []
    release, two_sent = threading.Event(), threading.Event()
    rendering = threading.Event()

    def send(lines: KindLines) -> None:
        sent.append(lines)
        if len(sent) == 1:
            rendering.set()
            release.wait(30)
        elif len(sent) == 2:
            two_sent.set()

    publisher = LinePublisher(holder, LineRenderer(), send)
    publisher.start()
    holder.publish(Kind.NODE, nodes(3, generation=1), 1)
    publisher.announce(Kind.NODE)
    assert rendering.wait(30)
    for generation in (2, 3, 4):  # three polls while the first is still being sent
        holder.publish(Kind.NODE, nodes(3, generation=generation), generation)
        publisher.announce(Kind.NODE)
    release.set()
    assert two_sent.wait(30)
    publisher.announce(Kind.NODE)  # nothing new: not sent again
    publisher.close(timeout=30)
    texts = [b"".join(lines.cpu.inflated()).decode() for lines in sent]
    assert len(texts) == 2
    assert "1.000000001\n" in texts[0] and "1.000000004\n" in texts[1]


def test_the_publisher_lets_go_of_a_snapshot_once_sent_and_only_that_one() -> None:
    """The worker's holder keeps no poll's samples after the server has them (the next poll
    would hold two batches at once); a newer snapshot published meanwhile is kept."""
    holder = SnapshotHolder(15.0)
    sent: list[KindLines] = []
    rendering, release = threading.Event(), threading.Event()

    def send(lines: KindLines) -> None:
        sent.append(lines)
        rendering.set()
        release.wait(30)

    publisher = LinePublisher(holder, LineRenderer(), send)
    publisher.start()
    holder.publish(Kind.NODE, nodes(3, generation=1), 1)
    publisher.announce(Kind.NODE)
    assert rendering.wait(30)
    holder.publish(Kind.NODE, nodes(4, generation=2), 2)  # a poll while the first is sent
    release.set()
    publisher.close(timeout=30)
    newer = holder.view().nodes
    assert newer is not None and len(newer.samples) == 4  # not sent yet: kept
    publisher = LinePublisher(holder, LineRenderer(), sent.append)
    publisher.start()
    publisher.announce(Kind.NODE)
    wait = time.monotonic() + 30
    while len(sent) < 2 and time.monotonic() < wait:
        time.sleep(0.01)
    publisher.close(timeout=30)
    assert len(sent) == 2 and "1.000000002\n" in b"".join(sent[1].cpu.inflated()).decode()
    view = holder.view()
    assert view.nodes is not None and len(view.nodes.samples) == 0  # sent: let go
    assert view.nodes.generation == newer.generation and view.fresh  # still fresh


def test_a_kind_not_sent_for_three_intervals_is_withdrawn() -> None:
    now = [0.0]
    relay = RelayRegistry(10.0, clock=lambda: now[0], process_collectors=False)
    cpu = deflate([b'recorder_node_cpu_usage_cores{node="a"} 1.0\n'])
    relay.publish(KindLines(Kind.NODE, cpu, deflate([])))
    assert 'node="a"' in scrape(relay, compress=True)
    now[0] = 29.0
    assert 'node="a"' in scrape(relay) and relay.fresh()
    now[0] = 30.0
    assert 'node="a"' not in scrape(relay) and 'node="a"' not in scrape(relay, compress=True)
    assert not relay.fresh()

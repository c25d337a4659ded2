"""The service's ``/metrics`` (relayed across its two processes) is valid in both formats and
holds the same data as the in-process exposition."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from recorder.domain import Kind
from recorder.exporter import KindLines, RelayRegistry
from recorder.store import open_store
from tests.metrics_support import CLUSTER, relayed_registry


def data_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(("recorder_node_", "recorder_container_"))
    ]


def scrape(relay: RelayRegistry, *, openmetrics: bool = False, compress: bool = False) -> str:
    body = b"".join(relay.exposition(openmetrics=openmetrics, gzip=compress))
    return (gzip.decompress(body) if compress else body).decode()


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
    linted = subprocess.run(
        ["promtool", "check", "metrics"], input=relayed.encode(), capture_output=True, timeout=60
    )
    assert linted.returncode == 0, linted.stderr.decode()


def test_a_kind_not_sent_for_three_intervals_is_withdrawn() -> None:
    now = [0.0]
    relay = RelayRegistry(10.0, clock=lambda: now[0], process_collectors=False)
    relay.publish(KindLines(Kind.NODE, b'recorder_node_cpu_usage_cores{node="a"} 1.0\n', b""))
    assert 'node="a"' in scrape(relay, compress=True)
    now[0] = 29.0
    assert 'node="a"' in scrape(relay) and relay.fresh()
    now[0] = 30.0
    assert 'node="a"' not in scrape(relay) and 'node="a"' not in scrape(relay, compress=True)
    assert not relay.fresh()

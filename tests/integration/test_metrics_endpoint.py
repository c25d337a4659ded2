"""``GET /metrics`` over HTTP: format negotiation, gzip, and ``promtool check metrics``.

promtool (2.42 here, and still in 3.x) lints only the Prometheus text format: it has no
OpenMetrics parser (prometheus/prometheus#8932), and fed OpenMetrics it misreads the counters
(``# TYPE recorder_polls counter`` with ``recorder_polls_total`` samples) as undocumented.
So the OpenMetrics body is checked by prometheus-client's strict OpenMetrics parser (which
rejects a missing ``# EOF``, bad ``# UNIT`` lines, misplaced samples), must describe the same
samples as the text body, and its families re-exposed as text must pass promtool too. The
end-to-end test has a real Prometheus scrape OpenMetrics.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Iterable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

from recorder.api.app import AppDeps, create_app
from recorder.api.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from recorder.exporter import RecorderRegistry, RelayRegistry
from recorder.store import Store, open_store
from tests.metrics_support import populated_registry, relayed_registry
from tests.servers import serving

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture(scope="module", params=["in-process", "relayed"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One populated recorder app per registry for the whole module (building it migrates a
    database): ``RecorderRegistry`` in one process, and the service's ``RelayRegistry``
    serving the compressed lines a worker sent."""
    store: Store = open_store(f"sqlite:///{tmp_path_factory.mktemp('metrics') / 'rec.db'}")
    store.migrate()
    if request.param == "relayed":
        registry: RecorderRegistry | RelayRegistry = relayed_registry(store)[0]
    else:
        registry = populated_registry(store)
    deps = AppDeps(store, registry)
    with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
        yield client
    store.close()


def get(
    client: httpx.Client, accept: str | None = None, encoding: str = "identity"
) -> httpx.Response:
    headers = {"Accept-Encoding": encoding}
    if accept is not None:
        headers["Accept"] = accept
    return client.get("/metrics", headers=headers)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.5", False),
        ("application/openmetrics-text;version=1.0.0;q=0", False),
        ("application/openmetrics-text;version=2.0.0", False),
        ("application/json", False),
    ],
)
def test_format_is_negotiated_by_accept(
    client: httpx.Client, accept: str | None, openmetrics: bool
) -> None:
    response = get(client, accept)
    assert response.status_code == 200
    expected = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    assert response.headers["content-type"] == expected
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    assert response.text.endswith("# EOF\n") is openmetrics
    assert ("# UNIT recorder_node_cpu_usage_cores cores\n" in response.text) is openmetrics
    assert int(response.headers["content-length"]) == len(response.content)


def data_lines(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(("recorder_node_", "recorder_container_"))
    ]


@pytest.mark.parametrize("accept", [None, PROMETHEUS_ACCEPT])
def test_gzip_when_asked(client: httpx.Client, accept: str | None) -> None:
    plain = get(client, accept)
    assert "content-encoding" not in plain.headers
    for encoding in ("gzip", "deflate, gzip;q=0.5", "*"):
        with client.stream(
            "GET", "/metrics", headers={"Accept-Encoding": encoding, "Accept": accept or ""}
        ) as response:
            raw = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(raw)
        text = gzip.decompress(raw).decode()
        assert data_lines(text) == data_lines(plain.text)
        assert text.endswith("# EOF\n") is (accept is not None)
        if accept is None and encoding == "gzip":
            assert promtool(text.encode()) == ""
    for refused in ("gzip;q=0", "identity", "br"):
        assert "content-encoding" not in get(client, accept, refused).headers


def promtool(body: bytes) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    done = subprocess.run(
        [binary, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    return (done.stdout + done.stderr).decode() + (
        "" if done.returncode == 0 else f"exit {done.returncode}"
    )


def test_promtool_finds_nothing_in_the_text_format(client: httpx.Client) -> None:
    body = get(client).content
    assert b"recorder_poll_errors_total{" in body  # labelled families have samples
    assert b"process_resident_memory_bytes " in body
    assert promtool(body) == ""


class Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def test_openmetrics_parses_strictly_to_the_same_samples_and_lints_clean(
    client: httpx.Client,
) -> None:
    text = get(client).text
    openmetrics = get(client, PROMETHEUS_ACCEPT).text
    families = list(text_string_to_metric_families(openmetrics))

    def samples(found: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        skip = (
            "_created",
            "recorder_metrics_render_duration_seconds",
            "process_",
            "python_gc",
            "recorder_worker_resident_memory_bytes",  # relayed: read at each scrape
        )
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in found
            for s in family.samples
            if not s.name.endswith("_created") and not s.name.startswith(skip)
        }

    assert samples(families) == samples(parse_text(text))
    units = {f.name: f.unit for f in families if f.unit}
    assert units.pop("recorder_worker_resident_memory_bytes", "bytes") == "bytes"  # relayed
    assert units == {
        "recorder_node_cpu_usage_cores": "cores",
        "recorder_node_memory_working_set_bytes": "bytes",
        "recorder_container_cpu_usage_cores": "cores",
        "recorder_container_memory_working_set_bytes": "bytes",
        "recorder_poll_duration_seconds": "seconds",
        "recorder_store_write_duration_seconds": "seconds",
        "recorder_last_successful_poll_timestamp_seconds": "seconds",
        "recorder_last_successful_write_timestamp_seconds": "seconds",
        "recorder_buffer_bytes": "bytes",
        "recorder_compaction_duration_seconds": "seconds",
        "recorder_database_size_bytes": "bytes",
        "recorder_database_volume_size_bytes": "bytes",
        "recorder_database_volume_available_bytes": "bytes",
        "recorder_metrics_render_duration_seconds": "seconds",
    }
    again = CollectorRegistry()
    again.register(Families(families))
    assert promtool(generate_latest(again)) == ""

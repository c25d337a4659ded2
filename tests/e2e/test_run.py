"""End to end: the simulator and the real `recorder` processes on loopback ports."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recorder.domain import DEFAULT_CLUSTER, Kind, Sample
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
START = 1_714_557_600.0  # a whole number of resolutions


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def simulated() -> Iterator[tuple[str, ClusterModel, Clock]]:
    clock = Clock(START)
    config = SimulatorConfig(nodes=3, pods=12, seed=4, resolution_seconds=15, start_time=START)
    model = ClusterModel(config, clock=clock)
    with SimulatorServer(create_app(model)) as server:
        yield server.url, model, clock


def history(base: str, resource: str, kind: str) -> dict[tuple[str, ...], list[list[float]]]:
    response = httpx.get(
        f"{base}/api/v1/history",
        params={"resource": resource, "kind": kind, "start": START - 3600, "end": START + 3600},
    )
    response.raise_for_status()
    return {
        tuple(series["labels"].values()): series["points"]
        for series in response.json()["data"]["series"]
    }


def identity(sample: Sample) -> tuple[str, ...]:
    key = sample.key
    return (key.node,) if key.kind is Kind.NODE else (key.namespace, key.pod, key.container)


def gauges(text: str) -> dict[tuple[str, tuple[str, ...]], float]:
    found = {}
    for line in text.splitlines():
        match = re.match(r"(recorder_(?:node|container)_\w+)\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            order = ("node",) if "node" in labels else ("namespace", "pod", "container")
            found[(match.group(1), tuple(labels[k] for k in order))] = float(match.group(3))
    return found


def test_run_records_and_serves_exactly_what_the_simulator_served(
    simulated: tuple[str, ClusterModel, Clock], tmp_path: Path
) -> None:
    url, model, clock = simulated
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "rec.db"
    process = start_recorder(
        [
            "run",
            "--api-url",
            url,
            "--database-url",
            f"sqlite:///{db}",
            "--interval",
            "0.3s",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        tmp_path,
    )
    try:
        first = model.samples(START)
        wait_for(
            lambda: sum(len(p) for p in history(base, "cpu", "container").values()) > 0,
            30,
            "the first poll to be stored",
        )
        clock.now = START + 15  # the next metric resolution
        second = model.samples(START + 15)
        wait_for(
            lambda: all(len(p) == 2 for p in history(base, "cpu", "node").values()),
            30,
            "the second resolution to be stored",
        )
        time.sleep(1)  # a few more polls of the same resolution store nothing new
        served = {}
        for sample in (*first, *second):
            # History labels start with the cluster: the recorder runs in the default one.
            labelled = (DEFAULT_CLUSTER, *identity(sample))
            served.setdefault((sample.key.kind, labelled), []).append(sample)
        for kind in ("node", "container"):
            for resource in ("cpu", "memory"):
                stored = history(base, resource, kind)
                expected = {
                    ident: [
                        [
                            s.timestamp_ms / 1000,
                            s.cpu_nanocores / 1e9 if resource == "cpu" else s.memory_bytes,
                        ]
                        for s in samples
                    ]
                    for (k, ident), samples in served.items()
                    if k.value == kind
                }
                assert stored == expected, (kind, resource)
        exposed = gauges(httpx.get(f"{base}/metrics").text)
        expected_gauges = {}
        for s in second:
            kind = "node" if s.key.kind is Kind.NODE else "container"
            expected_gauges[(f"recorder_{kind}_cpu_usage_cores", identity(s))] = (
                s.cpu_nanocores / 1e9
            )
            expected_gauges[(f"recorder_{kind}_memory_working_set_bytes", identity(s))] = float(
                s.memory_bytes
            )
        assert exposed == expected_gauges
        metrics = httpx.get(f"{base}/metrics").text
        assert 'recorder_polls_total{resource="pods"}' in metrics
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        output = stop(process)
    assert "Traceback" not in output
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM samples_head").fetchone()[0]
    assert rows == len(first) + len(second)


def test_poll_of_real_world_odd_responses(tmp_path: Path) -> None:
    static = {
        "/apis/metrics.k8s.io/v1beta1/nodes": (FIXTURES / "odd_nodes.json").read_bytes(),
        "/apis/metrics.k8s.io/v1beta1/pods": (FIXTURES / "odd_pods.json").read_bytes(),
    }
    db = tmp_path / "odd.db"
    with SimulatorServer(create_app(static=static)) as server:
        command = ["poll", "--api-url", server.url, "--database-url", f"sqlite:///{db}"]
        first = run_recorder(command)
        again = run_recorder(command)
    assert first.returncode == 0, first.stderr
    assert "nodes: 2 samples, 2 stored, 0 already stored, 3 rejected" in first.stdout
    assert "pods: 4 samples, 4 stored, 0 already stored, 5 rejected" in first.stdout
    for line in (
        "rejected null-ts-node: null_timestamp",
        "rejected shop/no-timestamp: null_timestamp",
        "rejected kube-system/bad-quantity/broken: bad_quantity",
        "rejected kube-system/wrong-type: malformed_item",
    ):
        assert line in first.stdout
    assert "nodes: 2 samples, 0 stored, 2 already stored" in again.stdout
    assert "pods: 4 samples, 0 stored, 4 already stored" in again.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT s.kind, s.node, s.namespace, s.pod, s.container, h.ts_ms, h.window_ms,"
            " h.cpu_nanocores, h.memory_bytes FROM samples_head h JOIN series s"
            " ON s.id = h.series_id ORDER BY s.kind, s.node, s.namespace, s.pod, s.container"
        ).fetchall()
    t0 = 1_714_557_600_000
    assert rows == [
        (
            "container",
            "",
            "kube-system",
            "bad-quantity",
            "ok",
            t0 + 2000,
            30_000,
            7_338_891,
            24_716 * 1024,
        ),
        (
            "container",
            "",
            "kube-system",
            "dns-1",
            "coredns",
            t0 + 3500,
            30_000,
            2_501_000_000,
            70 * 2**20,
        ),
        ("container", "", "shop", "web-7c9f", "app", t0, 60_000, 1_500_000_000, 512 * 2**20),
        ("container", "", "shop", "web-7c9f", "sidecar", t0, 60_000, 0, 10_043 * 1024),
        ("node", "10.0.2.15", "", "", "", t0, 60_000, 0, 2**30),
        (
            "node",
            "ip-10-0-1-23.ec2.internal",
            "",
            "",
            "",
            t0,
            10_043,
            2_250_000_000,
            3_977_756 * 1024,
        ),
    ]


def test_poll_failure_exits_non_zero(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_recorder(
        [
            "poll",
            "--api-url",
            f"http://127.0.0.1:{port}",
            "--database-url",
            f"sqlite:///{tmp_path / 'x.db'}",
        ]
    )
    assert result.returncode == 1
    assert "FAILED: cannot reach the Kubernetes API" in result.stdout


def test_run_without_a_cluster_points_to_demo(tmp_path: Path) -> None:
    result = run_recorder(["run"], tmp_path)
    assert result.returncode == 2
    assert "no cluster is configured" in result.stderr and "recorder demo" in result.stderr


def test_demo_serves_data_and_prints_where_to_look(tmp_path: Path) -> None:
    port = free_port()
    process = start_recorder(
        ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "1s", "--pods", "8"], tmp_path
    )
    try:
        wait_for(
            lambda: (
                "recorder_container_cpu_usage_cores{"
                in httpx.get(f"http://127.0.0.1:{port}/metrics").text
            ),
            30,
            "demo data on /metrics",
        )
    finally:
        output = stop(process)
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert f"http://127.0.0.1:{port}/api/v1/history" in output
    assert (tmp_path / "recorder.db").exists()

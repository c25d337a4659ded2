"""A real Prometheus scrapes `recorder run` polling the simulator, and holds exactly the
simulator's values; a pod that is gone is stale in Prometheus after the next scrape.

The simulated cluster runs on a clock the test moves: frozen on one metric resolution, every
poll returns the same samples, so Prometheus' instant values can be compared exactly with the
model's values for the recorder's latest sample timestamp (read from /api/v1/history). Then the
clock moves to a resolution in which one of the pods has been replaced (the model churns pods):
its series must vanish from Prometheus' instant query at once, which only a staleness marker
does (without one, the last value would be returned for the 5-minute lookback).
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recorder.domain import Kind, Sample
from recorder.exporter import DATA_FAMILIES
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.processes import free_port, start_process, start_recorder, stop

pytestmark = pytest.mark.slow

RESOLUTION_SECONDS = 2.0
TIMEOUT_SECONDS = 30.0
DATA_QUERY = '{__name__=~"recorder_(node|container)_.+"}'
CLUSTER = "e2e-eu-1"
"""``--cluster`` of the recorder: every data series in Prometheus carries it."""

Series = tuple[str, tuple[tuple[str, str], ...]]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    model: ClusterModel
    clock: Clock
    recorder: str
    prometheus: str
    logs: Path

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
            for p in sorted(self.logs.glob("*.log"))
        )


def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5.0)


def _wait(what: str, check: Callable[[], bool], stack: Stack) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{stack.tail()}")


def _churned_resolution(model: ClusterModel, start: float) -> tuple[float, set[str]]:
    """The first later resolution in which some pod running at ``start`` is gone."""
    running = {p.name for p in model.pod_metrics(start)}
    for step in range(1, 2000):
        at = start + step * RESOLUTION_SECONDS
        gone = running - {p.name for p in model.pod_metrics(at)}
        if gone:
            return at, gone
    raise AssertionError("the simulated cluster never replaced a pod")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed (Debian package prometheus; .ci/run installs it)")
    start = math.floor(time.time() / RESOLUTION_SECONDS) * RESOLUTION_SECONDS
    clock = Clock(start)
    config = SimulatorConfig(
        nodes=2,
        pods=8,
        seed=3,
        resolution_seconds=RESOLUTION_SECONDS,
        churn_per_hour=60.0,
        namespaces=3,
        pending_fraction=0.0,
    )
    model = ClusterModel(config, clock=clock)
    logs = tmp_path / "logs"
    logs.mkdir()
    recorder_port, prometheus_port = free_port(), free_port()
    processes: list[subprocess.Popen[str]] = []
    with SimulatorServer(create_app(model)) as simulator:
        processes.append(
            start_recorder(
                [
                    "run",
                    "--api-url",
                    simulator.url,
                    "--cluster",
                    CLUSTER,
                    "--database-url",
                    f"sqlite:///{tmp_path / 'recorder.db'}",
                    "--interval",
                    "1s",
                    "--listen",
                    f"127.0.0.1:{recorder_port}",
                ],
                log=logs / "recorder.log",
            )
        )
        settings = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "recorder",
                    "static_configs": [{"targets": [f"127.0.0.1:{recorder_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(settings))
        processes.append(
            start_process(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                log=logs / "prometheus.log",
            )
        )
        try:
            yield Stack(
                model,
                clock,
                f"http://127.0.0.1:{recorder_port}",
                f"http://127.0.0.1:{prometheus_port}",
                logs,
            )
        finally:
            for process in processes:
                stop(process, sig=signal.SIGTERM)


def _expected(samples: tuple[Sample, ...]) -> dict[Series, float]:
    """Every data gauge the recorder should expose for these samples, with its value."""
    out: dict[Series, float] = {}
    for sample in samples:
        key = sample.key
        labels = {"cluster": CLUSTER}
        if key.kind is Kind.NODE:
            labels["node"] = key.node
        else:
            labels |= {"namespace": key.namespace, "pod": key.pod, "container": key.container}
        for family in DATA_FAMILIES:
            if family.kind is key.kind:
                value = (
                    sample.cpu_nanocores / 1e9
                    if family.resource.value == "cpu"
                    else float(sample.memory_bytes)
                )
                out[(family.name, tuple(sorted(labels.items())))] = value
    return out


def _query(client: httpx.Client, stack: Stack, query: str) -> list[dict[str, Any]]:
    response = client.get(f"{stack.prometheus}/api/v1/query", params={"query": query})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _in_prometheus(client: httpx.Client, stack: Stack) -> dict[Series, float]:
    found: dict[Series, float] = {}
    for series in _query(client, stack, DATA_QUERY):
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        assert (labels.pop("job"), labels.pop("instance")) == (
            "recorder",
            stack.recorder.removeprefix("http://"),
        )
        found[(name, tuple(sorted(labels.items())))] = float(series["value"][1])
    return found


def _latest_sample_ms(client: httpx.Client, stack: Stack) -> int:
    """The newest sample timestamp the recorder stored, over every node and container."""
    newest = 0
    for kind in ("node", "container"):
        response = client.get(
            f"{stack.recorder}/api/v1/history",
            params={
                "resource": "cpu",
                "kind": kind,
                "start": stack.clock.now - 3600,
                "end": stack.clock.now + 3600,
            },
        )
        response.raise_for_status()
        for series in response.json()["data"]["series"]:
            newest = max([newest, *(round(t * 1000) for t, _ in series["points"])])
    return newest


def _settles_on(client: httpx.Client, stack: Stack, at: float) -> dict[Series, float]:
    """Waits until the recorder stored the resolution at ``at`` and Prometheus holds the
    model's values for that sample timestamp; returns what the model says."""
    holder: dict[str, dict[Series, float]] = {}

    def settled() -> bool:
        latest_ms = _latest_sample_ms(client, stack)
        if latest_ms != round(stack.model.frame(at).timestamp * 1000):
            return False
        holder["expected"] = _expected(stack.model.samples(latest_ms / 1000))
        return _in_prometheus(client, stack) == holder["expected"]

    _wait(f"Prometheus to hold the simulated values at {at}", settled, stack)
    return holder["expected"]


def test_prometheus_holds_the_simulated_values_and_marks_a_gone_pod_stale(stack: Stack) -> None:
    with _client() as client:
        first = _settles_on(client, stack, stack.clock.now)
        assert _in_prometheus(client, stack) == first
        assert {name for name, _ in first} == {f.name for f in DATA_FAMILIES}

        (target,) = client.get(f"{stack.prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        assert (target["health"], target["lastError"]) == ("up", "")
        # Prometheus asks for OpenMetrics first: the unit comes from its `# UNIT` line.
        metadata = client.get(
            f"{stack.prometheus}/api/v1/metadata",
            params={"metric": "recorder_container_cpu_usage_cores"},
        ).json()["data"]["recorder_container_cpu_usage_cores"]
        assert metadata == [
            {"type": "gauge", "help": DATA_FAMILIES[2].documentation, "unit": "cores"}
        ]

        later, gone = _churned_resolution(stack.model, stack.clock.now)
        stack.clock.now = later
        second = _settles_on(client, stack, later)
        for pod in sorted(gone):
            selector = f'recorder_container_cpu_usage_cores{{pod="{pod}"}}'
            assert _query(client, stack, f"last_over_time({selector}[5m])"), (
                f"{pod} was never scraped"
            )
            assert _query(client, stack, selector) == [], f"{pod} is not stale"
            assert not any(dict(labels).get("pod") == pod for _, labels in second)
        assert _in_prometheus(client, stack) == second

"""Prometheus scraping both replicas stores each container once: two ``recorder run`` on one
PostgreSQL database against the simulator, a real ``prometheus`` scraping both ``/metrics``
every second; its HTTP API holds every node and container series of each data family exactly
once, from the leader, and ``recorder_leader 1`` for one instance. The leader killed with
SIGKILL (the whole pod, or only its worker process, whose server lives on and restarts it as a
follower), the follower takes over within two intervals and, once Prometheus scraped it again,
every series is there once more, exactly once, now from the other instance. A server whose
worker died drops that worker's usage gauges and ``recorder_leader`` at once.

A follower that exposed usage gauges would double every series (``count by`` 2), which fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recorder.domain import Kind
from recorder.exporter import DATA_FAMILIES
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.faults.service import Service, migrate, role, running, usage_lines
from tests.processes import free_port, start_process, stop, wait_for

pytestmark = pytest.mark.slow

INTERVAL = 1.0
CONFIG = SimulatorConfig(
    nodes=3, pods=6, seed=11, resolution_seconds=2, churn_per_hour=0.0, pending_fraction=0.0
)
"""No churn and no Pending pod: the cluster's series are the same at every resolution."""


@dataclass
class Cluster:
    url: str
    model: ClusterModel

    def series(self, kind: Kind) -> set[tuple[str, ...]]:
        """The identities the simulator serves for ``kind``: (node,) or (namespace, pod,
        container)."""
        keys = (s.key for s in self.model.samples(time.time()) if s.key.kind is kind)
        if kind is Kind.NODE:
            return {(k.node,) for k in keys}
        return {(k.namespace, k.pod, k.container) for k in keys}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    model = ClusterModel(CONFIG)
    with SimulatorServer(create_app(model)) as server:
        yield Cluster(server.url, model)


class Prometheus:
    """A real ``prometheus`` scraping ``targets`` every second, and its HTTP API."""

    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log
        self.client = httpx.Client(base_url=base, trust_env=False, timeout=5.0)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/query", params={"query": promql})
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def targets(self) -> dict[str, str]:
        """Each scraped instance's health (``up``, ``down``, ``unknown``)."""
        response = self.client.get("/api/v1/targets")
        response.raise_for_status()
        answer = response.json()["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in answer}


@contextmanager
def prometheus(tmp_path: Path, targets: list[str]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed (Debian package prometheus; .ci/run installs it)")
    settings = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "recorder", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(settings))
    port = free_port()
    log = tmp_path / "prometheus.log"
    process = start_process(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log=log,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        # Its API answers 503 "Service Unavailable" until its storage is open.
        wait_for(lambda: server.client.get("/-/ready").status_code == 200, 30, "Prometheus ready")
        yield server
    finally:
        server.client.close()
        stop(process, sig=signal.SIGTERM)


def instance(service: Service) -> str:
    return service.base.removeprefix("http://")


def exposed_once_by(prom: Prometheus, cluster: Cluster) -> str | None:
    """The one instance every data series comes from, when Prometheus holds each node and
    container of the simulator exactly once in every data family (else None)."""
    sources: set[str] = set()
    for family in DATA_FAMILIES:
        labels = ("node",) if family.kind is Kind.NODE else ("namespace", "pod", "container")
        by = ",".join(labels)
        counts = prom.query(f"count by ({by}) ({family.name})")
        found = {tuple(c["metric"][n] for n in labels): int(c["value"][1]) for c in counts}
        if found.keys() != cluster.series(family.kind) or set(found.values()) != {1}:
            return None
        sources |= {
            r["metric"]["instance"] for r in prom.query(f"count by (instance) ({family.name})")
        }
    return sources.pop() if len(sources) == 1 else None


def settles(prom: Prometheus, cluster: Cluster, on: Service, what: str, timeout: float) -> None:
    """Waits until every series is held once, from ``on``; else fails saying what is held."""
    try:
        wait_for(lambda: exposed_once_by(prom, cluster) == instance(on), timeout, what)
    except AssertionError as exc:
        held = prom.query(
            'count by (instance, __name__) ({__name__=~"recorder_(node|container)_.+"})'
        )
        shown = sorted(
            (r["metric"]["instance"], r["metric"]["__name__"], r["value"][1]) for r in held
        )
        raise AssertionError(
            f"{exc}; Prometheus holds (instance, family, series): {shown}"
        ) from None


def leaders(prom: Prometheus) -> dict[str, float]:
    return {r["metric"]["instance"]: float(r["value"][1]) for r in prom.query("recorder_leader")}


@pytest.mark.parametrize("kill", ["pod", "worker"])
def test_prometheus_scraping_both_replicas_stores_each_container_once(
    tmp_path: Path, cluster: Cluster, postgres_url: str, figure: object, kill: str
) -> None:
    """``kill``: ``pod`` SIGKILLs the leader's server and worker (a node lost); ``worker`` only
    its worker (an OOM kill), so its server, still scraped, restarts it as a follower."""
    migrate(postgres_url)
    with running(tmp_path, cluster.url, postgres_url, interval="1s", name="a") as a:
        wait_for(lambda: role(a) == "leader", 30, "replica a to lead")
        with (
            running(tmp_path, cluster.url, postgres_url, interval="1s", name="b") as b,
            prometheus(tmp_path, [instance(a), instance(b)]) as prom,
        ):
            wait_for(lambda: role(b).startswith("follower"), 30, "replica b to follow")
            wait_for(
                lambda: set(prom.targets().values()) == {"up"} and len(leaders(prom)) == 2,
                30,
                "Prometheus to scrape both replicas",
            )
            settles(prom, cluster, a, "every series once, from the leader a", 30)
            assert leaders(prom) == {instance(a): 1.0, instance(b): 0.0}
            assert len(cluster.series(Kind.CONTAINER)) >= CONFIG.pods  # a container per pod

            os.kill(a.worker_pid(), signal.SIGKILL)
            if kill == "pod":
                os.kill(a.process.pid, signal.SIGKILL)
                a.process.wait(10)
            killed = time.monotonic()
            if kill == "worker":
                # What the dead worker sent goes with it, at once: not its usage gauges for
                # three more intervals beside the new leader's, nor "recorder_leader 1".
                wait_for(
                    lambda: not usage_lines(a) and a.metric("recorder_leader") == 0,
                    0.8,
                    "a's server to withdraw its dead worker's gauges",
                )
            wait_for(lambda: role(b) == "leader", 10, "replica b to take over")
            takeover = time.monotonic() - killed
            settles(prom, cluster, b, "every series once again, from the new leader b", 15)
            scraped_again = time.monotonic() - killed
            assert takeover <= 2 * INTERVAL + 0.5, takeover  # + the probe's own latency
            if kill == "pod":
                assert prom.targets()[instance(a)] == "down"
                assert leaders(prom) == {instance(b): 1.0}
            else:
                wait_for(lambda: role(a).startswith("follower"), 30, "a's new worker to follow")
                wait_for(
                    lambda: leaders(prom) == {instance(a): 0.0, instance(b): 1.0},
                    10,
                    "Prometheus to see a follow",
                )
                assert exposed_once_by(prom, cluster) == instance(b)
                assert not usage_lines(a)
    figure(  # type: ignore[operator]
        takeover_seconds=round(takeover, 2), once_again_seconds=round(scraped_again, 2)
    )

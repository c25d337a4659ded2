"""Fleet mode end to end: two simulated clusters (two `recorder simulate` processes, different
seeds) recorded by `recorder poll` processes, each with its own `--cluster`, into one
PostgreSQL database; the history API and PromQL answer them apart and together; a recorder
without `--cluster` is refused by that database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recorder.api.app import AppDeps, create_app
from recorder.cli import main
from recorder.exporter import SnapshotHolder, build_registry
from recorder.store import open_store
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for
from tests.servers import serving

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLUSTERS = {"eu-1": 1, "us-2": 2}
"""Cluster name: the seed of its simulator."""


@pytest.fixture
def simulators(tmp_path: Path) -> Iterator[dict[str, str]]:
    urls, processes = {}, []
    try:
        for name, seed in CLUSTERS.items():
            port = free_port()
            args = ["simulate", "--listen", f"127.0.0.1:{port}", "--seed", str(seed)]
            processes.append(start_recorder([*args, "--nodes", "2", "--pods", "4"], tmp_path))
            urls[name] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            wait_for(
                lambda url=url: httpx.get(f"{url}/apis/metrics.k8s.io/v1beta1/nodes").is_success,
                30,
                f"the simulator at {url}",
            )
        yield urls
    finally:
        for process in processes:
            stop(process)


def _poll(url: str, database_url: str, tmp_path: Path, *cluster: str) -> None:
    args = ["poll", "--api-url", url, "--database-url", database_url]
    done = run_recorder([*args, *cluster], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_two_clusters_in_one_database_apart_and_together(
    simulators: dict[str, str],
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = open_store(postgres_url)
    store.migrate()
    for name, url in simulators.items():
        _poll(url, postgres_url, tmp_path, "--cluster", name)

    # Without --cluster, the recorder refuses the fleet's database (in process: it stops
    # before its first request).
    args = ["poll", "--api-url", simulators["eu-1"], "--database-url", postgres_url]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds the history of another cluster (eu-1, us-2)" in line
    assert "--cluster NAME" in line

    registry, _ = build_registry(SnapshotHolder())
    deps = AppDeps(store, registry, max_range_ms=400 * 86_400_000)
    try:
        with serving(create_app(deps)) as url, httpx.Client(base_url=url) as client:
            window = {"start": str(time.time() - 600), "end": str(time.time() + 60)}

            def clusters(**params: str) -> set[str]:
                answer = client.get("/api/v1/series", params=params)
                assert answer.status_code == 200, answer.text
                return {s["labels"]["cluster"] for s in answer.json()["data"]}

            assert clusters() == {"eu-1", "us-2"}
            assert clusters(cluster="eu-1") == {"eu-1"}
            assert clusters(cluster="us-2", kind="node") == {"us-2"}

            summary = client.get(
                "/api/v1/summary", params={"group_by": "namespace", "cluster": "us-2", **window}
            )
            assert summary.status_code == 200, summary.text
            assert summary.json()["data"]["groups"]

            query = "count by (cluster) (recorder_node_cpu_usage_cores)"
            both = client.get("/prometheus/api/v1/query", params={"query": query})
            assert both.status_code == 200, both.text
            counted = {r["metric"]["cluster"]: r["value"][1] for r in both.json()["data"]["result"]}
            assert counted == {"eu-1": "2", "us-2": "2"}
            one = client.get(
                "/prometheus/api/v1/query",
                params={"query": 'sum(recorder_container_cpu_usage_cores{cluster="eu-1"})'},
            )
            assert one.json()["data"]["result"], one.text
            values = client.get("/prometheus/api/v1/label/cluster/values")
            assert values.json()["data"] == ["eu-1", "us-2"]
    finally:
        store.close()

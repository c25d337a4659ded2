"""``recorder top nodes --agg last`` against ``kubectl top nodes`` on the simulator at the same
instant: the recorder polls the simulator's Metrics API and records its nodes' allocatable
(the cluster-objects reader), and prints the same CPU(cores), CPU(%), MEMORY(bytes) and
MEMORY(%) that kubectl computes from the live APIs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder.domain import DEFAULT_CLUSTER
from recorder.kube.client import MetricsClient
from recorder.kube.objects import Changes, ObjectReader
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.store import open_store
from recorder.store.objects import ObjectStore
from tests.kube_support import Clock, load
from tests.processes import run_recorder

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl")
T0 = 1_700_000_003.0


@pytest.fixture
def simulator() -> Iterator[str]:
    model = ClusterModel(SimulatorConfig(nodes=6, pods=30, seed=11), clock=Clock(T0))
    with SimulatorServer(create_app(model, core_api=True)) as server:
        yield server.url


def kubectl_top_nodes(url: str, home: Path) -> list[list[str]]:
    assert KUBECTL is not None, "kubectl is required for these tests (install kubectl 1.32)"
    config = home / "config"
    config.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "KUBECONFIG": str(config)}
    done = subprocess.run(
        [KUBECTL, "--server", url, "--request-timeout", "10s", "top", "nodes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def record_allocatable(url: str, database_url: str) -> None:
    """The cluster-objects reader's node rows into the store, as the worker writes them."""
    store = open_store(database_url)
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)

    def sink(changes: Changes) -> None:
        objects.record_nodes(changes.nodes, now_ms=int(T0 * 1000))

    try:
        with MetricsClient(load(api_url=url), timeout_seconds=5) as client:
            reader = ObjectReader(client, sink)  # type: ignore[arg-type]
            for informer in reader.informers:
                informer.sync()
            reader.flush()
    finally:
        store.close()


def test_top_nodes_agg_last_equals_kubectl_top_nodes(simulator: str, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'rec.db'}"
    polled = run_recorder(["poll", "--api-url", simulator, "--database-url", database_url])
    assert polled.returncode == 0, polled.stderr
    record_allocatable(simulator, database_url)
    ours = run_recorder(
        [
            "top",
            "nodes",
            "--agg",
            "last",
            "--since",
            "5m",
            "--end",
            str(T0 + 60),
            "--database-url",
            database_url,
        ]
    )
    assert ours.returncode == 0, ours.stderr
    theirs = kubectl_top_nodes(simulator, tmp_path)
    assert theirs[0] == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    rows = [line.split() for line in ours.stdout.splitlines()]
    assert rows[0] == theirs[0]
    assert sorted(rows[1:]) == sorted(theirs[1:])
    assert len(rows) == 7
    as_json = run_recorder(
        [
            "top",
            "nodes",
            "--agg",
            "last",
            "--end",
            str(T0 + 60),
            "-o",
            "json",
            "--database-url",
            database_url,
        ]
    )
    assert as_json.returncode == 0, as_json.stderr
    percents = {
        r["node"]: [f"{r['cpu_percent']}%", f"{r['memory_percent']}%"]
        for r in json.loads(as_json.stdout)
    }
    assert percents == {row[0]: [row[2], row[4]] for row in theirs[1:]}
    # Without the allocatable recorded (no cluster objects), the columns are kubectl's older
    # two: nothing to divide by.
    bare_url = f"sqlite:///{tmp_path / 'bare.db'}"
    assert (
        run_recorder(["poll", "--api-url", simulator, "--database-url", bare_url]).returncode == 0
    )
    bare = run_recorder(
        ["top", "nodes", "--agg", "last", "--end", str(T0 + 60), "--database-url", bare_url]
    )
    assert bare.stdout.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]

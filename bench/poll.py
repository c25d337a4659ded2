"""Poll-cycle benchmark: one whole poll against a floor measured on the same data.

    python -m bench.poll --nodes 5000 --pods 150000      # metrics-server's documented maximum
    python -m bench.poll --nodes 100 --pods 3000         # quick look

The simulator runs in its own process (``recorder simulate``), as metrics-server would. In one
run, on the same responses:

- **fetch**: the two list calls alone (HTTP, gzip);
- **floor**: ``bench.floor``, design §7: fetch, msgspec typed decode, exact integers, a bare
  ``executemany`` of one row per container and node into an unindexed SQLite table: the least
  any recorder must do;
- **poll**: ``Poller.poll_once()`` into a SQLite store (decode, exact parsing, normalize,
  idempotent write, snapshot), steady state (the series already exist), median of ``--polls``.

Peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.floor import Floor
from recorder.buffer import WriteQueue
from recorder.exporter import SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.kube.client import MetricsClient
from recorder.kube.config import ClusterConfig
from recorder.poller import Poller
from recorder.store import open_store

RESOLUTION_SECONDS = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_served(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/apis/metrics.k8s.io", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the simulator did not start")


def floor(url: str, db: Path) -> tuple[float, float]:
    """(fetch seconds, floor seconds) for one pass of the honest floor (``bench.floor``)."""
    honest = Floor(url, f"sqlite:///{db}")
    try:
        phases = honest.once()
    finally:
        honest.close()
    return phases["fetch"], phases["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--polls", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recorder",
            "simulate",
            "--nodes",
            str(args.nodes),
            "--pods",
            str(args.pods),
            "--listen",
            f"127.0.0.1:{port}",
            "--resolution",
            f"{RESOLUTION_SECONDS}s",
            "--log-level",
            "WARNING",
        ],
    )
    try:
        wait_until_served(url, 120)
        with tempfile.TemporaryDirectory() as folder:
            store = open_store(f"sqlite:///{Path(folder) / 'poll.db'}")
            store.migrate()
            holder = SnapshotHolder()
            _registry, metrics = build_registry(holder)
            client = MetricsClient(ClusterConfig(server=url), timeout_seconds=120)
            poller = Poller(client, Flusher(WriteQueue(), store, metrics), holder, metrics)
            first_begun = time.perf_counter()
            first = poller.poll_once()
            first_seconds = time.perf_counter() - first_begun
            polls, fetches, floors = [], [], []
            for _ in range(args.polls):
                time.sleep(RESOLUTION_SECONDS)  # a new resolution: new values to store
                fetch_s, floor_s = floor(url, Path(folder) / "floor.db")
                fetches.append(fetch_s)
                floors.append(floor_s)
                begun = time.perf_counter()
                report = poller.poll_once()
                polls.append(time.perf_counter() - begun)
                assert report.ok, report
            client.close()
            store.close()
    finally:
        simulator.terminate()
        simulator.wait(30)
    poll, floor_median = statistics.median(polls), statistics.median(floors)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"series per poll:            {first.written}")
    print(f"first poll (new series):    {first_seconds:.2f} s")
    print(f"fetch (HTTP, 2 lists):      {statistics.median(fetches):.2f} s")
    print(f"floor (bench.floor):        {floor_median:.2f} s")
    print(f"poll (steady, median):      {poll:.2f} s  = {poll / floor_median:.2f} x the floor")
    print(f"peak memory (max RSS):      {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()

"""A crowd of dashboard clients against the running service, on both databases.

    python -m bench.crowd                       # 50 clients, 60 s, SQLite and PostgreSQL
    python -m bench.crowd --seconds 20 --database sqlite

A 500-pod simulator (its own process, as metrics-server would be) is polled every second by
``recorder run`` (server and worker processes) whose database already holds the last hour of
that cluster. ``--clients`` clients each ask, in a loop, for one namespace's last hour of raw
history (as a Grafana panel would), honouring ``Retry-After`` on 503. A separate process asks
``/livez`` every 20 ms. Reported, per database, in one run: ``/livez`` p50/p99/max, the share of
polls that ran, queries answered 200 / 503 with ``Retry-After`` / anything else, query
latency, and the peak resident memory of all recorder processes together.

The targets (issue "Nothing lost, ever"): ``/livez`` p99 under 100 ms, at least 95 % of polls
run, at least 90 % of queries 200 and the rest 503 with ``Retry-After``, no other 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy

from bench.poll import free_port
from recorder.domain import Batch, Kind
from recorder.simulator import ClusterModel, SimulatorConfig
from recorder.store import open_store

RESOLUTION_SECONDS = 15
NODES = 20
SEED = 3


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def prefill(database_url: str, pods: int) -> list[str]:
    """The last hour of the simulated cluster, written as the recorder would have; returns the
    namespaces."""
    model = ClusterModel(
        SimulatorConfig(nodes=NODES, pods=pods, seed=SEED, resolution_seconds=RESOLUTION_SECONDS)
    )
    store = open_store(database_url)
    store.migrate()
    namespaces: set[str] = set()
    now = time.time()
    try:
        for at in range(int(now - 3600), int(now), RESOLUTION_SECONDS):
            samples = model.samples(float(at))
            for kind in (Kind.NODE, Kind.CONTAINER):
                chosen = tuple(s for s in samples if s.key.kind is kind)
                namespaces.update(s.key.namespace for s in chosen if s.key.namespace)
                store.write(Batch(kind, chosen), now_ms=int(now * 1000))
    finally:
        store.close()
    return sorted(namespaces)


def rss_of_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total


def probe(url: str, seconds: float, every: float = 0.02) -> None:
    """The ``--probe`` mode: ``/livez`` every ``every`` seconds from its own process; prints
    latencies."""
    latencies, failures = [], 0
    stopped = threading.Event()  # SIGTERM ends the probing early, and it still reports
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with httpx.Client(timeout=5) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stopped.is_set():
            begun = time.perf_counter()
            try:
                ok = client.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - begun)
            failures += not ok
            time.sleep(max(0.0, every - (time.perf_counter() - begun)))
    print(json.dumps({"latencies": latencies, "failures": failures}))


async def crowd(
    base: str, namespaces: list[str], clients: int, seconds: float
) -> tuple[Counter[str], list[float]]:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(index: int) -> None:
            namespace = namespaces[index % len(namespaces)]
            params = {"resource": "cpu", "namespace": namespace, "start": "-1h"}
            while time.monotonic() < end:
                begun = time.perf_counter()
                try:
                    response = await client.get("/api/v1/history", params=params)
                except httpx.HTTPError as exc:
                    outcomes[f"error {type(exc).__name__}"] += 1
                    continue
                if response.status_code == 200:
                    outcomes["200"] += 1
                    latencies.append(time.perf_counter() - begun)
                elif response.status_code == 503 and response.headers.get("Retry-After"):
                    outcomes["503 Retry-After"] += 1
                    await asyncio.sleep(min(float(response.headers["Retry-After"]), 1.0))
                else:
                    outcomes[str(response.status_code)] += 1

        await asyncio.gather(*(one(i) for i in range(clients)))
    return outcomes, latencies


def polls(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith('recorder_polls_total{resource="pods"}'):
            return float(line.split()[-1])
    return 0.0


def run_one(database: str, args: argparse.Namespace) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory() as folder:
        admin = None
        if database == "sqlite":
            url = f"sqlite:///{Path(folder) / 'crowd.db'}"
        else:
            admin_url = os.environ.get(
                "RECORDER_TEST_POSTGRES_URL",
                "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
            )
            name = f"recorder_crowd_{uuid.uuid4().hex[:8]}"
            admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            url = (
                sqlalchemy.engine.make_url(admin_url)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        try:
            return measure(url, database, folder, args)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()


def measure(
    url: str, database: str, folder: str, args: argparse.Namespace
) -> dict[str, float | str]:
    namespaces = prefill(url, args.pods)
    sim_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "KUBE"))}
    simulator = subprocess.Popen(
        [sys.executable, "-m", "recorder", "simulate", "--nodes", str(NODES), "--pods",
         str(args.pods), "--seed", str(SEED), "--resolution", f"{RESOLUTION_SECONDS}s",
         "--listen", f"127.0.0.1:{sim_port}", "--log-level", "WARNING"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    log = open(Path(folder) / "recorder.log", "wb")
    recorder = subprocess.Popen(
        [sys.executable, "-m", "recorder", "run", "--api-url", f"http://127.0.0.1:{sim_port}",
         "--database-url", url, "--interval", "1s", "--listen", f"127.0.0.1:{port}",
         "--log-level", "WARNING"],
        env={**env, "RECORDER_SPOOL_DIR": str(Path(folder) / "spool")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/apis/metrics.k8s.io", 60)
        wait_http(f"{base}/livez", 60)
        time.sleep(3)
        peak = 0
        sampling = threading.Event()

        def sample_rss() -> None:
            nonlocal peak
            while not sampling.wait(0.5):
                peak = max(peak, rss_of_tree(recorder.pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        prober = subprocess.Popen(
            [sys.executable, "-m", "bench.crowd", "--probe", f"{base}/livez", str(args.seconds)],
            stdout=subprocess.PIPE,
            env=env,
        )
        polls_before = polls(base)
        begun = time.monotonic()
        outcomes, latencies = asyncio.run(crowd(base, namespaces, args.clients, args.seconds))
        elapsed = time.monotonic() - begun
        polls_run = polls(base) - polls_before
        probed = json.loads(prober.communicate(timeout=args.seconds + 30)[0])
        sampling.set()
        sampler.join()
        recorder.send_signal(signal.SIGTERM)
        code = recorder.wait(60)
    finally:
        for process in (recorder, simulator):
            if process.poll() is None:
                process.kill()
                process.wait()
        log.close()
    livez = sorted(probed["latencies"])
    total = sum(outcomes.values())
    other = total - outcomes["200"] - outcomes["503 Retry-After"]
    return {
        "database": database,
        "livez_p50_ms": 1000 * statistics.median(livez),
        "livez_p99_ms": 1000 * livez[int(0.99 * (len(livez) - 1))],
        "livez_max_ms": 1000 * livez[-1],
        "livez_failures": probed["failures"],
        "polls_run_share": polls_run / int(elapsed),
        "queries": total,
        "queries_200_share": outcomes["200"] / total if total else 0.0,
        "queries_503_retry_after": outcomes["503 Retry-After"],
        "queries_other": other,
        "query_p50_s": statistics.median(latencies) if latencies else float("nan"),
        "peak_rss_mib_all_processes": peak / 2**20,
        "exit_code_after_sigterm": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--probe", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe[0], float(args.probe[1]))
        return
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    results = [run_one(database, args) for database in databases]
    keys = list(results[0])
    width = max(len(k) for k in keys)
    for key in keys:
        cells = [
            f"{r[key]:>14.3f}" if isinstance(r[key], float) else f"{r[key]!s:>14}" for r in results
        ]
        print(f"{key:<{width}} {' '.join(cells)}")
    target = all(
        float(r["livez_p99_ms"]) < 100
        and float(r["polls_run_share"]) >= 0.95
        and float(r["queries_200_share"]) >= 0.90
        and r["queries_other"] == 0
        for r in results
    )
    print(json.dumps({"results": results, "targets_met": target}))


if __name__ == "__main__":
    main()

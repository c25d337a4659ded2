"""API load of reading the cluster objects: list + watch (what the recorder does) against a
full list at a fixed interval, measured against the simulator's core API.

    python -m bench.objects_load                                  # 5,000 nodes, 150,000 pods
    python -m bench.objects_load --nodes 100 --pods 3000 --watch-seconds 60   # quick look

One simulator (its own process, ``recorder simulate --core-api``, at its default pod churn)
serves the recorder's own ``Informer`` for each resource the recorder reads (ReplicaSets, Jobs,
nodes, HPAs, pods), through the recorder's own client (gzip, pages of 500). Counted on the
wire, per request kind: requests and bytes (as received: compressed where the server
compressed), first for the first lists, then for ``--watch-seconds`` of watches (each
informer's own loop, as the worker runs it): the bytes per hour are the window's, the
requests per hour each watch renewed once per timeout, plus any request beyond the first
watches the window saw (a watch the server ended early). A periodic list costs what the
first list cost (measured), once per interval: its rows are that list multiplied out, per
hour. ``--json PATH`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.poll import free_port, wait_until_served
from recorder.kube.client import MetricsClient
from recorder.kube.config import load_cluster_config
from recorder.kube.objects import (
    HPAS,
    JOBS,
    NODES,
    PODS,
    REPLICASETS,
    WATCH_SECONDS,
    Informer,
    ObjectCache,
)

RESOURCES = (REPLICASETS, JOBS, NODES, HPAS, PODS)
HOUR = 3600.0


class _CountedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, count: Any) -> None:
        self._inner = inner
        self._count = count

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._count(len(chunk))
            yield chunk

    def close(self) -> None:
        self._inner.close()


class Counting(httpx.BaseTransport):
    """Counts each request and the bytes of its response as they arrive, by (phase, what)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.phase = "lists"
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = "watch" if request.url.params.get("watch") in ("1", "true") else "list"
        resource = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        key = (self.phase, f"{kind} {resource}")
        with self._lock:
            self.requests[key] += 1
        response = self.inner.handle_request(request)

        def count(n: int) -> None:
            with self._lock:
                self.bytes[key] += n

        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _CountedStream(response.stream, count)
        return response

    def close(self) -> None:
        self.inner.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "KUBE"))}
    simulator = subprocess.Popen(
        [sys.executable, "-m", "recorder", "simulate", "--nodes", str(args.nodes),
         "--pods", str(args.pods), "--listen", f"127.0.0.1:{port}", "--resolution", "15s",
         "--log-level", "WARNING", "--core-api"],
        env=env,
    )  # fmt: skip
    try:
        wait_until_served(api, 300)
        config = load_cluster_config(
            api_url=api, kubeconfig=None, context=None, environ={}, announce=False
        )
        client = MetricsClient(config, timeout_seconds=60)
        http = client._http  # the client's own connection pool, counted on its way in
        assert http is not None
        counting = Counting(http._transport)
        http._transport = counting
        cache = ObjectCache()
        informers = [
            Informer(client, r, None, cache, watch_seconds=args.watch_timeout) for r in RESOURCES
        ]
        listed: dict[str, float] = {}
        begun = time.perf_counter()
        for informer in informers:
            started = time.perf_counter()
            informer.sync()
            listed[informer.resource.plural] = time.perf_counter() - started
        lists_seconds = time.perf_counter() - begun
        first = cache.drain(now=time.time())
        counting.phase = "watches"
        stop = threading.Event()
        threads = [
            threading.Thread(target=i.run, args=(stop, lambda _i: None), daemon=True)
            for i in informers
        ]
        for thread in threads:
            thread.start()
        changed = Counter[str]()
        watched_from = time.perf_counter()
        while time.perf_counter() - watched_from < args.watch_seconds:
            time.sleep(min(10.0, args.watch_seconds))
            changes = cache.drain(now=time.time())
            changed["pods"] += len(changes.pods)
            changed["containers"] += len(changes.containers)
            changed["nodes"] += len(changes.nodes)
        watched = time.perf_counter() - watched_from
        stop.set()
        for thread in threads:
            thread.join(args.watch_timeout + 10)
        client.close()
    finally:
        simulator.terminate()
        simulator.wait(30)
    per_hour = HOUR / watched
    lists = {w: n for (p, w), n in counting.requests.items() if p == "lists"}
    list_bytes = {w: n for (p, w), n in counting.bytes.items() if p == "lists"}
    watches = {w: n for (p, w), n in counting.requests.items() if p == "watches"}
    watch_bytes = {w: n for (p, w), n in counting.bytes.items() if p == "watches"}
    list_requests, list_total = sum(lists.values()), sum(list_bytes.values())
    return {
        "nodes": args.nodes,
        "pods": args.pods,
        "first_lists": {
            "seconds": round(lists_seconds, 2),
            "seconds_by_resource": {k: round(v, 2) for k, v in listed.items()},
            "requests": lists,
            "bytes": list_bytes,
            "objects": {
                "pods": len(first.pods),
                "containers": len(first.containers),
                "nodes": len(first.nodes),
            },
        },
        "watch": {
            "seconds": round(watched, 1),
            "requests": watches,
            "bytes": watch_bytes,
            "changes": dict(changed),
            # Each watch is opened once, then renewed when its timeoutSeconds ends: beyond the
            # first ones, the renewals (and any reopened early) seen in the window.
            "requests_per_hour": round(
                len(RESOURCES) * HOUR / args.watch_timeout
                + max(0, sum(watches.values()) - len(RESOURCES)) * per_hour
            ),
            "bytes_per_hour": round(sum(watch_bytes.values()) * per_hour),
        },
        "periodic_list": {
            f"every {every:g} s": {
                "requests_per_hour": round(list_requests * HOUR / every),
                "bytes_per_hour": round(list_total * HOUR / every),
            }
            for every in args.list_every
        },
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def show(result: dict[str, Any]) -> None:
    first, watch = result["first_lists"], result["watch"]
    print(
        f"# cluster objects at {result['nodes']:,} nodes, {result['pods']:,} pods "
        "(recorder simulate --core-api, default churn)"
    )
    print("| | requests | bytes on the wire |")
    print("|---|---|---|")
    print(
        f"| list + watch: the first lists ({first['seconds']} s) | "
        f"{sum(first['requests'].values()):,} once | {_mb(sum(first['bytes'].values()))} once |"
    )
    print(
        f"| list + watch: then, per hour (watched {watch['seconds']} s; "
        f"{watch['changes'].get('pods', 0)} pod changes) | {watch['requests_per_hour']:,} | "
        f"{_mb(watch['bytes_per_hour'])} |"
    )
    for name, row in result["periodic_list"].items():
        print(
            f"| a full list {name} instead, per hour | {row['requests_per_hour']:,} | "
            f"{_mb(row['bytes_per_hour'])} |"
        )
    print(f"requests of the first lists: {first['requests']}")
    print(f"requests of the watches: {watch['requests']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--watch-seconds", type=float, default=240.0)
    parser.add_argument(
        "--watch-timeout",
        type=float,
        default=WATCH_SECONDS,
        help="each watch request's timeoutSeconds (the recorder's)",
    )
    parser.add_argument(
        "--list-every", type=float, nargs="+", default=[30.0, 600.0], help="seconds"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args)
    show(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

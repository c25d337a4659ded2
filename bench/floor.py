"""The honest floor of one poll (design §7): the least any recorder must do with the same data.

    python -m bench.floor --url http://127.0.0.1:8001 --database-url sqlite:////tmp/floor.db

One pass: GET both lists over loopback with gzip (as the recorder asks); msgspec typed decode
into ``gc=False`` structs of exactly the fields needed (name, namespace, labels, timestamp,
container names and usage, node usage); exact integer nanocores and bytes; one
``(series id, timestamp ms, cpu, memory)`` row per container and node, the series id from a
dict; a bare insert into an unindexed table (SQLite ``executemany`` in WAL with
``synchronous=NORMAL``, PostgreSQL binary ``COPY``); cyclic GC off during the pass.

Not the floor: ``json.loads`` (about 2 s of a 4 s poll at 150,000 pods: a recorder does not
need it), a cache of parsed quantities (values change every resolution). Timestamps *are*
parsed once per distinct string: every item of a list shares a handful of them, and any
recorder may remember the few it has seen this pass.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import sqlalchemy


class Meta(msgspec.Struct, frozen=True, gc=False):
    name: str = ""
    namespace: str = ""
    labels: dict[str, str] | None = None


class Usage(msgspec.Struct, frozen=True, gc=False):
    cpu: str = "0"
    memory: str = "0"


class Container(msgspec.Struct, gc=False):
    name: str = ""
    usage: Usage = Usage()


class Pod(msgspec.Struct, gc=False):
    metadata: Meta = Meta()
    timestamp: str = ""
    containers: list[Container] = []


class Node(msgspec.Struct, gc=False):
    metadata: Meta = Meta()
    timestamp: str = ""
    usage: Usage = Usage()


class PodList(msgspec.Struct, gc=False):
    items: list[Pod] = []


class NodeList(msgspec.Struct, gc=False):
    items: list[Node] = []


_pods = msgspec.json.Decoder(PodList)
_nodes = msgspec.json.Decoder(NodeList)
_SUFFIX = {
    "n": 1,
    "u": 1_000,
    "m": 1_000_000,
    "k": 10**12,
    "M": 10**15,
    "G": 10**18,
}
"""CPU suffixes to nanocores (a bare number is cores: 10**9)."""
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def nanocores(text: str) -> int:
    factor = _SUFFIX.get(text[-1])
    if factor is not None:
        return int(text[:-1]) * factor
    return int(Decimal(text) * 10**9)


def memory_bytes(text: str) -> int:
    factor = _BINARY.get(text[-2:])
    if factor is not None:
        return int(text[:-2]) * factor
    factor = _BINARY.get(text[-1])
    if factor is not None:
        return int(text[:-1]) * factor
    return int(text)


class Floor:
    """One floor 'recorder': a client, a series dictionary and an unindexed table."""

    def __init__(self, api_url: str, database_url: str) -> None:
        self._api = api_url.rstrip("/")
        self._client = httpx.Client(timeout=120, headers={"Accept-Encoding": "gzip"})
        self._ids: dict[tuple[str, str, str], int] = {}
        self._times: dict[str, int] = {}
        self._engine = sqlalchemy.create_engine(database_url)
        self._postgres = self._engine.dialect.name == "postgresql"
        self._raw = self._engine.raw_connection()
        cursor = self._raw.cursor()
        if self._postgres:
            cursor.execute("DROP TABLE IF EXISTS floor_rows")
            cursor.execute(
                "CREATE TABLE floor_rows (sid integer, ts bigint, cpu bigint, mem bigint)"
            )
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("DROP TABLE IF EXISTS floor_rows")
            cursor.execute(
                "CREATE TABLE floor_rows (sid INTEGER, ts INTEGER, cpu INTEGER, mem INTEGER)"
            )
        self._raw.commit()

    def close(self) -> None:
        self._client.close()
        self._raw.close()
        self._engine.dispose()

    def _sid(self, key: tuple[str, str, str]) -> int:
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self._ids) + 1
        return sid

    def _ms(self, stamp: str) -> int:
        ms = self._times.get(stamp)
        if ms is None:
            ms = self._times[stamp] = int(datetime.fromisoformat(stamp).timestamp() * 1000)
        return ms

    def _rows(self, nodes: NodeList, pods: PodList) -> Iterator[tuple[int, int, int, int]]:
        sid, ms = self._sid, self._ms
        for node in nodes.items:
            u = node.usage
            yield (
                sid(("", node.metadata.name, "")),
                ms(node.timestamp),
                nanocores(u.cpu),
                memory_bytes(u.memory),
            )
        for pod in pods.items:
            meta = pod.metadata
            at = ms(pod.timestamp)
            for c in pod.containers:
                u = c.usage
                yield (
                    sid((meta.namespace, meta.name, c.name)),
                    at,
                    nanocores(u.cpu),
                    memory_bytes(u.memory),
                )

    def once(self) -> dict[str, float]:
        """One pass; seconds by phase and the number of rows."""
        gc.disable()
        try:
            begun = time.perf_counter()
            base = f"{self._api}/apis/metrics.k8s.io/v1beta1"
            node_body = self._client.get(f"{base}/nodes").raise_for_status().content
            pod_body = self._client.get(f"{base}/pods").raise_for_status().content
            fetched = time.perf_counter()
            nodes, pods = _nodes.decode(node_body), _pods.decode(pod_body)
            del node_body, pod_body
            decoded = time.perf_counter()
            rows = list(self._rows(nodes, pods))
            built = time.perf_counter()
            self._insert(rows)
            stored = time.perf_counter()
        finally:
            gc.enable()
        return {
            "fetch": fetched - begun,
            "decode": decoded - fetched,
            "rows": built - decoded,
            "insert": stored - built,
            "total": stored - begun,
            "count": float(len(rows)),
        }

    def _insert(self, rows: list[tuple[int, int, int, int]]) -> None:
        cursor: Any = self._raw.cursor()
        if self._postgres:
            with cursor.copy("COPY floor_rows FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int8", "int8", "int8"])
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany("INSERT INTO floor_rows VALUES (?, ?, ?, ?)", rows)
        self._raw.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the Metrics API (simulator) base URL")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--wait", type=float, default=15.0, help="seconds between passes")
    args = parser.parse_args()
    floor = Floor(args.url, args.database_url)
    try:
        for index in range(args.passes):
            if index:
                time.sleep(args.wait)
            print({k: round(v, 3) for k, v in floor.once().items()})
    finally:
        floor.close()


if __name__ == "__main__":
    main()

"""What the PromQL tests share: one history of samples (nodes and containers that start, stop
and have gaps, workloads recorded for most pods), written into the recorder's database and
into a real Prometheus' TSDB (``promtool tsdb create-blocks-from openmetrics``, then
``prometheus`` serving it on loopback), and the comparison of two query answers."""

from __future__ import annotations

import math
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Sample, SeriesKey
from recorder.query.promql.evaluation import instant_query
from recorder.query.promql.source import MemorySource
from recorder.query.promql.values import RawSeries, labels_of
from recorder.query.promql.wire import result_data
from recorder.store import Store
from recorder.store.objects import ObjectStore

T0_MS = 1_768_003_200_000
"""2026-01-10T00:00:00Z: where the history starts (in the past, so Prometheus keeps the
backfilled blocks with a long retention)."""
SPAN_MS = 3 * 3_600_000
POLL_MS = 30_000

WORKLOADS = {
    ("shop", "web-1"): ("Deployment", "web"),
    ("shop", "web-2"): ("Deployment", "web"),
    ("shop", "db-0"): ("StatefulSet", "db"),
    ("batch", "report-x"): ("Job", "report"),
}
"""Pods with a recorded workload; ``shop/debug`` has none (a bare pod)."""

MI = 2**20
SPECS = (
    ("shop", "web-1", "app", 0, 100_000_000, None, 128 * MI, 256 * MI),
    ("shop", "web-1", "app", 3600, 200_000_000, 400_000_000, 256 * MI, 256 * MI),
    ("shop", "web-1", "sidecar", 0, 10_000_000, None, 16 * MI, None),
    ("shop", "web-2", "app", 0, 100_000_000, None, 128 * MI, 256 * MI),
    ("shop", "web-2", "app", 3600, 200_000_000, 400_000_000, 256 * MI, 256 * MI),
    ("shop", "db-0", "postgres", 0, 500_000_000, 1_000_000_000, 2**30, 2**30),
    ("batch", "report-x", "run", 3600, 250_000_000, None, None, 512 * MI),
)
"""Containers' requests and limits as the worker records them: (namespace, pod, container,
since (seconds after the start), CPU request and limit in nanocores, memory request and limit
in bytes; None: not set). debug/shell and web-2/sidecar have none."""
SPEC_FAMILIES = {
    "recorder_container_cpu_request_cores": (4, 1e9),
    "recorder_container_cpu_limit_cores": (5, 1e9),
    "recorder_container_memory_request_bytes": (6, 1),
    "recorder_container_memory_limit_bytes": (7, 1),
}
"""Each requests/limits family: its value's position in a ``SPECS`` row, and its scale."""


@dataclass(frozen=True, slots=True)
class Track:
    """One series' samples: its key and ``(ts_ms, cpu_nanocores, memory_bytes)`` rows."""

    key: SeriesKey
    rows: tuple[tuple[int, int, int], ...]


def _track(
    rng: random.Random,
    key: SeriesKey,
    begin_s: int,
    end_s: int,
    gaps: tuple[tuple[int, int], ...],
    *,
    every_ms: int = POLL_MS,
    jitter: bool = True,
) -> Track:
    rows = []
    for t in range(begin_s * 1000, end_s * 1000, every_ms):
        if any(a * 1000 <= t < b * 1000 for a, b in gaps):
            continue
        # metrics-server's timestamps wander within the poll: half seconds, exact in binary
        ts = T0_MS + t + (rng.randrange(0, 20) * 500 if jitter else 0)
        cpu = rng.randrange(1_000_000, 2_000_000_000)
        memory = rng.randrange(10_000_000, 4_000_000_000)
        rows.append((ts, cpu, memory))
    return Track(key, tuple(rows))


def history() -> list[Track]:
    rng = random.Random(15)
    full = SPAN_MS // 1000
    container = SeriesKey.for_container
    return [
        _track(rng, SeriesKey.for_node("n1"), 0, full, ()),
        _track(rng, SeriesKey.for_node("n2"), 1800, 9000, ()),
        # On whole minutes: samples exactly at the lookback's and the ranges' edges.
        _track(rng, SeriesKey.for_node("n3"), 0, 3000, (), every_ms=60_000, jitter=False),
        _track(rng, container("shop", "web-1", "app"), 0, full, ()),
        _track(rng, container("shop", "web-1", "sidecar"), 0, full, ()),
        _track(rng, container("shop", "web-2", "app"), 0, full, ((5000, 5200),)),
        _track(rng, container("shop", "web-2", "sidecar"), 0, full, ()),
        _track(rng, container("shop", "db-0", "postgres"), 0, full, ()),
        _track(rng, container("shop", "debug", "shell"), 600, full, ((4000, 5800),)),
        _track(rng, container("batch", "report-x", "run"), 3600, 6000, ()),
    ]


def write_store(store: Store, tracks: list[Track]) -> None:
    """The tracks written poll by poll, the pods' workloads recorded, and the first two hours
    compacted into chunks (the third stays in the head: reads merge both)."""
    objects = ObjectStore(store.engine, DEFAULT_CLUSTER)
    objects.record_pods(
        [(ns, pod, kind, name, None) for (ns, pod), (kind, name) in WORKLOADS.items()],
        now_ms=T0_MS,
    )
    for since in sorted({spec[3] for spec in SPECS}):
        objects.record_containers(
            [(*spec[:3], *spec[4:], 0, None) for spec in SPECS if spec[3] == since],
            now_ms=T0_MS + since * 1000,
        )
    polls: dict[tuple[Kind, int], list[Sample]] = {}
    for track in tracks:
        for ts, cpu, memory in track.rows:
            poll = (ts - T0_MS) // POLL_MS
            sample = Sample(track.key, ts, POLL_MS, cpu, memory)
            polls.setdefault((track.key.kind, poll), []).append(sample)
    for (kind, poll), samples in sorted(polls.items(), key=lambda item: item[0][1]):
        store.write(Batch(kind, samples), now_ms=T0_MS + (poll + 1) * POLL_MS)
    store.maintain(now_ms=T0_MS + 2 * 3_600_000 + 20 * 60_000)


def _labels(key: SeriesKey) -> dict[str, str]:
    if key.kind is Kind.NODE:
        return {"cluster": key.cluster, "node": key.node}
    kind, name = WORKLOADS.get((key.namespace, key.pod), ("Pod", key.pod))
    return {
        "cluster": key.cluster,
        "container": key.container,
        "namespace": key.namespace,
        "pod": key.pod,
        "workload": name,
        "workload_kind": kind,
    }


def openmetrics(tracks: list[Track]) -> str:
    """The tracks as an OpenMetrics text: the exporter's names, CPU in cores (the same double
    the recorder computes: nanocores / 1e9), timestamps in seconds."""
    families = {
        (Kind.NODE, "cpu"): "recorder_node_cpu_usage_cores",
        (Kind.NODE, "memory"): "recorder_node_memory_working_set_bytes",
        (Kind.CONTAINER, "cpu"): "recorder_container_cpu_usage_cores",
        (Kind.CONTAINER, "memory"): "recorder_container_memory_working_set_bytes",
    }
    lines = []
    for (kind, resource), name in families.items():
        lines.append(f"# TYPE {name} gauge")
        for track in tracks:
            if track.key.kind is not kind:
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(_labels(track.key).items()))
            for ts, cpu, memory in track.rows:
                value = repr(cpu / 1e9) if resource == "cpu" else str(memory)
                lines.append(f"{name}{{{labels}}} {value} {ts / 1000}")
    for name, (position, scale) in SPEC_FAMILIES.items():
        lines.append(f"# TYPE {name} gauge")
        for track in tracks:
            key = track.key
            specs = [s for s in SPECS if s[:3] == (key.namespace, key.pod, key.container)]
            if key.kind is not Kind.CONTAINER or not specs:
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(_labels(key).items()))
            for ts, _cpu, _memory in track.rows:
                in_effect = [s for s in specs if T0_MS + s[3] * 1000 <= ts]
                value = in_effect[-1][position] if in_effect else None
                if value is not None:
                    text = repr(value / scale) if scale != 1 else str(value)
                    lines.append(f"{name}{{{labels}}} {text} {ts / 1000}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prometheus(directory: Path, tracks: list[Track]) -> Iterator[str]:
    """A Prometheus serving the tracks (backfilled blocks) on loopback; yields its URL."""
    data = directory / "history.om"
    data.write_text(openmetrics(tracks))
    tsdb = directory / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=36500d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {directory / 'prometheus.log'}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- comparing answers ---------------------------------------------------------------------

REL_TOL = 1e-9
ABS_TOL = 1e-12
"""Relative tolerance of the comparison; the absolute one only lets a result that is zero in
one evaluation and a rounding error away from it in the other pass."""


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _key(metric: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _points(item: dict[str, Any]) -> list[list[Any]]:
    if "values" in item:
        return list(item["values"])
    return [item["value"]]


def differences(ours: dict[str, Any], theirs: dict[str, Any], *, ordered: bool) -> list[str]:
    """What differs between the recorder's answer and Prometheus' (empty: the same)."""
    if ours.get("status") != theirs.get("status"):
        return [f"status: recorder {ours} != prometheus {theirs}"]
    if theirs["status"] != "success":
        if ours.get("errorType") != theirs.get("errorType"):
            return [f"errorType: recorder {ours} != prometheus {theirs}"]
        return []
    a, b = ours["data"], theirs["data"]
    if a["resultType"] != b["resultType"]:
        return [f"resultType: recorder {a['resultType']} != prometheus {b['resultType']}"]
    if a["resultType"] in ("scalar", "string"):
        same = a["result"][0] == b["result"][0] and (
            _same_value(a["result"][1], b["result"][1])
            if a["resultType"] == "scalar"
            else a["result"][1] == b["result"][1]
        )
        return [] if same else [f"recorder {a['result']} != prometheus {b['result']}"]
    out = []
    if ordered:
        mine = [item["value"][1] for item in a["result"]]
        other = [item["value"][1] for item in b["result"]]
        if len(mine) != len(other) or not all(map(_same_value, mine, other)):
            out.append(f"order of values: recorder {mine} != prometheus {other}")
    ours_by = {_key(item["metric"]): _points(item) for item in a["result"]}
    theirs_by = {_key(item["metric"]): _points(item) for item in b["result"]}
    out += [f"only the recorder has {k}" for k in sorted(ours_by.keys() - theirs_by.keys())]
    out += [f"only prometheus has {k}" for k in sorted(theirs_by.keys() - ours_by.keys())]
    for key in sorted(ours_by.keys() & theirs_by.keys()):
        mine_points = {float(t): v for t, v in ours_by[key]}
        their_points = {float(t): v for t, v in theirs_by[key]}
        only_mine = sorted(mine_points.keys() - their_points.keys())
        only_theirs = sorted(their_points.keys() - mine_points.keys())
        if only_mine:
            out.append(f"{key}: only the recorder has points at {only_mine[:5]}")
        if only_theirs:
            out.append(f"{key}: only prometheus has points at {only_theirs[:5]}")
        wrong = [
            (t, mine_points[t], their_points[t])
            for t in sorted(mine_points.keys() & their_points.keys())
            if not _same_value(mine_points[t], their_points[t])
        ]
        if wrong:
            shown = ", ".join(f"at {t}: recorder {x} != prometheus {y}" for t, x, y in wrong[:5])
            out.append(f"{key}: {len(wrong)} values differ: {shown}")
    return out


# --- series in memory, for the pure evaluator's tests ------------------------------------------


def raw(labels: dict[str, str], points: list[tuple[int, int]], scale: float = 1.0) -> RawSeries:
    """A series of ``(ts_ms, integer value)`` points."""
    stamps = np.array([t for t, _v in points], np.int64)
    ints = np.array([v for _t, v in points], np.int64)
    return RawSeries(labels_of(labels), stamps, ints, scale)


def instant(series: list[RawSeries], query: str, time_ms: int) -> dict[str, Any]:
    """The ``data`` of an instant query over ``series``."""
    return result_data(instant_query(MemorySource(series), query, time_ms))

"""A recorded simulated cluster for the recommendation tests, and the reference they compare
with.

``record_cluster`` drives the real poll path (``Poller`` -> ``Flusher`` -> store) and the real
cluster-object reader (``Informer`` lists -> ``ObjectCache`` -> ``ObjectStore``) against the
simulator over HTTP, with a fake clock, for ``steps`` buckets, then runs maintenance so that
closed blocks are answered by their statistics (sketches). Beside it, it keeps what the
simulator served, read on its own: every pod's samples, its workload (followed through the
ReplicaSets and Jobs), its containers' requests, limits and lastState, and the HPAs. ``reference``
computes the strategy's definition from those raw samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import httpx

from recorder.buffer import WriteQueue
from recorder.exporter import SnapshotHolder, build_registry
from recorder.flusher import Flusher
from recorder.kube.client import MetricsClient
from recorder.kube.objects import HPAS, JOBS, NODES, PODS, REPLICASETS, Informer, ObjectCache
from recorder.poller import Poller
from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.stats.sketch import exact_quantile
from recorder.store import Store
from recorder.store.objects import ObjectStore
from recorder.units import cpu_nanocores, memory_bytes
from tests.kube_support import Clock, load

T0 = 1_700_006_400.0
"""A whole hour (UTC), so blocks start with the recording."""
RESOLUTION = 60.0
STEPS = 95
"""95 minutes at one sample a minute: a single pod's container has fewer than 100 points, two
or more pods' have more; the first hour is a closed block (statistics), the rest is raw."""
MIB = 2**20
ROLLOUT_EVERY = 1800.0
"""Every Deployment rolls out every 30 minutes: three times or so in the recording, each a new
ReplicaSet, some with a trimmed CPU request (`simulator.resources.revised`)."""

PodKey = tuple[str, str]
ContainerKey = tuple[str, str, str]


@dataclass
class Recorded:
    """What the simulator served, read apart from the recorder."""

    url: str
    end_ms: int
    samples: dict[ContainerKey, dict[int, tuple[int, int]]] = field(default_factory=dict)
    """(namespace, pod, container) -> timestamp ms -> (CPU nanocores, memory bytes)."""
    workload: dict[PodKey, tuple[str, str]] = field(default_factory=dict)
    """(namespace, pod) -> (kind, name), when first seen."""
    first_seen: dict[PodKey, int] = field(default_factory=dict)
    resources: dict[ContainerKey, tuple[int | None, int | None, int | None, int | None]] = field(
        default_factory=dict
    )
    """The newest requests and limits each pod's container showed."""
    oom_killed: set[ContainerKey] = field(default_factory=set)
    hpas: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    """(namespace, kind, name) -> resource -> HPA name."""
    pods_at: dict[int, set[PodKey]] = field(default_factory=dict)
    """The pods listed at each step."""


def _quantity(values: dict[str, str] | None, name: str, parse: Any) -> int | None:
    text = (values or {}).get(name)
    return None if text is None else int(parse(text))


def _observe(http: httpx.Client, step: int, out: Recorded, now_ms: int) -> None:
    owners: dict[tuple[str, str], tuple[str, str] | None] = {}
    for path in ("/apis/apps/v1/replicasets", "/apis/batch/v1/jobs"):
        for obj in http.get(path).json()["items"]:
            meta = obj["metadata"]
            refs = [r for r in meta.get("ownerReferences", []) if r.get("controller")]
            owners[(meta["namespace"], meta["name"])] = (
                (refs[0]["kind"], refs[0]["name"]) if refs else None
            )
    listed: set[PodKey] = set()
    for pod in http.get("/api/v1/pods").json()["items"]:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        listed.add(key)
        ref = next(r for r in meta["ownerReferences"] if r["controller"])
        kind, name = ref["kind"], ref["name"]
        if kind in ("ReplicaSet", "Job"):
            kind, name = owners.get((meta["namespace"], name)) or (kind, name)
        if kind == "Node":
            kind, name = "Pod", meta["name"]
        out.workload.setdefault(key, (kind, name))
        out.first_seen.setdefault(key, now_ms)
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        for container in pod["spec"]["containers"]:
            res = container.get("resources", {})
            ckey = (*key, container["name"])
            out.resources[ckey] = (
                _quantity(res.get("requests"), "cpu", cpu_nanocores),
                _quantity(res.get("limits"), "cpu", cpu_nanocores),
                _quantity(res.get("requests"), "memory", memory_bytes),
                _quantity(res.get("limits"), "memory", memory_bytes),
            )
            last = statuses.get(container["name"], {}).get("lastState", {})
            if last.get("terminated", {}).get("reason") == "OOMKilled":
                out.oom_killed.add(ckey)
    out.pods_at[step] = listed
    for pod in http.get("/apis/metrics.k8s.io/v1beta1/pods").json()["items"]:
        meta = pod["metadata"]
        stamp = _rfc3339_ms(pod["timestamp"])
        for container in pod["containers"]:
            usage = container["usage"]
            out.samples.setdefault((meta["namespace"], meta["name"], container["name"]), {})[
                stamp
            ] = (cpu_nanocores(usage["cpu"]), memory_bytes(usage["memory"]))
    hpas: dict[tuple[str, str, str], dict[str, str]] = {}
    for hpa in http.get("/apis/autoscaling/v2/horizontalpodautoscalers").json()["items"]:
        ref = hpa["spec"]["scaleTargetRef"]
        for metric in hpa["spec"].get("metrics", []):
            if metric.get("type") == "Resource":
                hpas.setdefault(
                    (hpa["metadata"]["namespace"], ref["kind"], ref["name"]), {}
                ).setdefault(metric["resource"]["name"], hpa["metadata"]["name"])
    out.hpas = hpas


def _rfc3339_ms(text: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


SIMULATED = SimulatorConfig(
    nodes=3,
    pods=40,
    seed=4,
    churn_per_hour=3.0,
    rollout_every_seconds=ROLLOUT_EVERY,
    resolution_seconds=RESOLUTION,
)
"""The cluster the recommendation tests record by default."""


@contextmanager
def recorded_cluster(
    store: Store, *, steps: int = STEPS, config: SimulatorConfig = SIMULATED
) -> Iterator[Recorded]:
    """The simulator of ``config`` (kept serving for the block, at its last instant) recorded
    for ``steps`` buckets (one poll per resolution) into ``store``; see the module docstring."""
    clock = Clock(T0)
    model = ClusterModel(config, clock=clock)
    resolution = config.resolution_seconds
    store.interval_ms = round(resolution * 1000)  # as the service sets it: one poll a bucket
    with (
        SimulatorServer(create_app(model, core_api=True)) as server,
        MetricsClient(load(api_url=server.url), timeout_seconds=10) as client,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        holder = SnapshotHolder()
        _registry, metrics = build_registry(holder)
        poller = Poller(client, Flusher(WriteQueue(), store, metrics), holder, metrics, clock=clock)
        objects = ObjectStore(store.engine, "default")
        cache = ObjectCache()
        readers = [
            Informer(client, r, None, cache, page_size=500, idle_seconds=1)
            for r in (REPLICASETS, JOBS, NODES, HPAS, PODS)
        ]
        recorded = Recorded(server.url, 0)
        for step in range(steps):
            clock.step(1, resolution)
            now_ms = round(clock() * 1000)
            report = poller.poll_once()
            assert report.ok, report
            for informer in readers:
                informer.sync()
            changes = cache.drain(now=clock())
            objects.record_pods(changes.pods, now_ms=now_ms)
            objects.record_containers(changes.containers, now_ms=now_ms)
            objects.record_nodes(changes.nodes, now_ms=now_ms)
            if changes.hpas is not None:
                objects.replace_hpas(changes.hpas, now_ms=now_ms)
            _observe(http, step, recorded, now_ms)
        recorded.end_ms = round(clock() * 1000)
        store.maintain(now_ms=recorded.end_ms)
        yield recorded


# --- the reference ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    points: int
    cpu_quantile: float
    cpu_max: int
    memory_max: int
    memory_proposal: int
    replicas: float
    current: tuple[int | None, int | None, int | None, int | None]
    oom_killed: bool
    hpa: dict[str, str]
    pods: set[str]


def reference(
    recorded: Recorded, *, start_ms: int, percentile: float = 95.0, buffer: float = 15.0
) -> dict[tuple[str, str, str, str], Expected]:
    """(namespace, kind, name, container) -> the strategy's numbers computed from the raw
    samples the simulator served in ``[start_ms, end_ms]``."""
    end_ms = recorded.end_ms
    pooled: dict[tuple[str, str, str, str], list[tuple[str, list[int], list[int], list[int]]]] = {}
    for (ns, pod, container), by_time in recorded.samples.items():
        stamps = sorted(t for t in by_time if start_ms <= t <= end_ms)
        if not stamps:
            continue
        kind, name = recorded.workload[(ns, pod)]
        pooled.setdefault((ns, kind, name, container), []).append(
            (pod, stamps, [by_time[t][0] for t in stamps], [by_time[t][1] for t in stamps])
        )
    out = {}
    for key, pods in pooled.items():
        ns, kind, name, container = key
        cpu = [v for _p, _s, c, _m in pods for v in c]
        memory_max = max(v for _p, _s, _c, m in pods for v in m)
        # Replicas: each pod's time with samples (count x smallest gap, within its span) over
        # the time from the first sample to the last plus an interval.
        own = 0
        firsts, lasts = [], []
        for _pod, stamps, _c, _m in pods:
            if len(stamps) < 2:
                continue
            gap = min(b - a for a, b in itertools.pairwise(stamps))
            own += min(len(stamps) * gap, stamps[-1] - stamps[0] + gap)
            firsts.append(stamps[0])
            lasts.append(stamps[-1] + gap)
        span = max(lasts) - min(firsts)
        newest_pod = max((p for p, *_ in pods), key=lambda p: (recorded.first_seen[(ns, p)], p))
        wanted = Fraction(memory_max) * (1 + Fraction(str(buffer)) / 100)
        out[key] = Expected(
            points=len(cpu),
            cpu_quantile=exact_quantile(cpu, percentile / 100),
            cpu_max=max(cpu),
            memory_max=memory_max,
            memory_proposal=math.ceil(wanted / MIB) * MIB,
            replicas=own / span,
            current=recorded.resources[(ns, newest_pod, container)],
            oom_killed=any((ns, p, container) in recorded.oom_killed for p, *_ in pods),
            hpa=recorded.hpas.get((ns, kind, name), {}),
            pods={p for p, *_ in pods},
        )
    return out

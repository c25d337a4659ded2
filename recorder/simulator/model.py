"""A deterministic simulated cluster: which pods run where, and what they use.

Values are a pure function of (seed, entity, time bucket): the clock is floored to a multiple of
``resolution_seconds`` (as metrics-server only has new numbers once per ``--metric-resolution``),
so asking twice within a bucket gives the same timestamp and the same values, and a fake clock
makes every result reproducible.

Usage per container = base level x daily sine wave x noise, with occasional zeros (idle
sidecars), bursts above one core and slow memory growth; memory is counted in whole 4 KiB pages.
A node uses the sum of its running pods plus its own system overhead.

Churn: every pod slot is re-occupied by a new pod (a new generated name, maybe another node) once
per lifetime, which averages ``1 / churn_per_hour`` hours. A new pod has no metrics for its first
one to three resolutions (metrics-server needs two scrapes), and ``pending_fraction`` of pods
never start: neither is listed, like Pending pods in a real cluster.

Rollouts (``rollout_every_seconds``, off by default): every Deployment rolls out once per period,
first at an instant drawn for it within the first period after the model's start. A rollout gives
the pod template a new hash (a new ReplicaSet ``<name>-<hash>``, so new pod names) and replaces
the workload's pods one by one, replica ``i`` at ``i`` staggers after the rollout's instant (a
stagger is one resolution, or less so that a rollout takes at most half a period); like a
rolling update, it keeps the old pod until the new one runs. A pod's
generation counts both: ``churn generation | revision << 40``, so it only grows with time.
"""

from __future__ import annotations

import functools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from recorder.domain import Sample, SeriesKey
from recorder.errors import ConfigError
from recorder.simulator.catalog import (
    BURST,
    DEFAULT_NAMESPACES,
    IDLE,
    LEAK,
    SAFE_ALPHABET,
    encode_safe,
)
from recorder.simulator.topology import (
    SUFFIX_SPACE,
    NodeSpec,
    PodSlot,
    Topology,
    Workload,
    build_topology,
)

__all__ = [
    "ClusterModel",
    "ContainerMetrics",
    "Frame",
    "NodeMetrics",
    "NodeSpec",
    "PodInstance",
    "PodMetrics",
    "SimulatorConfig",
]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MASK64 = (1 << 64) - 1
_DAY_SECONDS = 86_400.0
_REVISION_SHIFT = 40
_CHURN_MASK = (1 << _REVISION_SHIFT) - 1
_CACHE_LIMIT = 100_000
PAGE_KIB = 4


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What to simulate. ``namespaces`` is a count (taken from a built-in list) or the names.

    ``start_time`` (Unix seconds) makes the simulated clock start there instead of now, and then
    advance with the real clock. ``pods`` counts pod slots, Pending ones included.
    """

    nodes: int = 3
    pods: int = 30
    seed: int = 0
    resolution_seconds: float = 15.0
    churn_per_hour: float = 0.05
    namespaces: int | tuple[str, ...] = 6
    start_time: float | None = None
    pending_fraction: float = 0.01
    scrape_spread_seconds: int = 0
    """Each node's samples (and its pods') are stamped up to this many whole seconds before
    the bucket's time, a fixed offset per node, as kubelets are scraped at different moments
    and metrics-server reports each one's own timestamp; 0: one timestamp for every item."""
    rollout_every_seconds: float = 0.0
    """Every Deployment rolls out once per this many seconds (a new template hash, its pods
    replaced one by one); 0: never."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"the simulator needs at least one node, not {self.nodes}")
        if self.pods < 0:
            raise ConfigError(f"the number of simulated pods cannot be negative ({self.pods})")
        if not 1.0 <= self.resolution_seconds <= 3600.0:
            raise ConfigError(
                f"simulated metric resolution must be between 1s and 1h, "
                f"not {self.resolution_seconds}s"
            )
        if not 0.0 <= self.churn_per_hour <= 60.0:
            raise ConfigError(
                f"the churn (--churn, each pod's replacements per hour) must be within 0..60, "
                f"not {self.churn_per_hour:g}"
            )
        if not 0 <= self.scrape_spread_seconds < self.resolution_seconds:
            raise ConfigError(
                f"the scrape spread must be at least 0s and shorter than the resolution "
                f"({self.resolution_seconds:g}s), not {self.scrape_spread_seconds}s"
            )
        period = self.rollout_every_seconds
        if period and not 2 * self.resolution_seconds <= period <= 30 * _DAY_SECONDS:
            raise ConfigError(
                f"the rollout period (--rollout-every) must be 0 (none) or between two resolutions "
                f"({2 * self.resolution_seconds:g}s) and 30 days, not {period:g}s"
            )
        if not 0.0 <= self.pending_fraction < 1.0:
            raise ConfigError(
                f"pending_fraction must be within [0, 1), not {self.pending_fraction}"
            )
        if isinstance(self.namespaces, int):
            if self.namespaces < 1:
                raise ConfigError("the simulator needs at least one namespace")
        else:
            names = tuple(self.namespaces)
            object.__setattr__(self, "namespaces", names)
            bad = [n for n in names if not (_DNS_LABEL.fullmatch(n) and len(n) <= 63)]
            if not names or bad or len(set(names)) != len(names):
                raise ConfigError(
                    f"simulated namespaces must be distinct DNS labels, got {list(names)!r}"
                )

    @property
    def namespace_names(self) -> tuple[str, ...]:
        if not isinstance(self.namespaces, int):
            return self.namespaces
        count = self.namespaces
        extra = tuple(f"team-{i:02d}" for i in range(1, count - len(DEFAULT_NAMESPACES) + 1))
        return (DEFAULT_NAMESPACES + extra)[:count]


class PodInstance(NamedTuple):
    """The pod occupying a slot during one generation.

    A NamedTuple rather than a frozen dataclass: 150,000 of them are built for a large cluster's
    first frame, and tuples are several times cheaper to create.
    """

    slot: PodSlot
    generation: int
    name: str
    node: int
    started_at: float
    running_after: float
    """When metrics appear; infinity for a pod that stays Pending."""
    revision: int
    """Its Deployment's rollouts before it started (0: the template the model began with)."""
    labels: Mapping[str, str]
    """The slot's labels, with the revision's ``pod-template-hash``."""

    @property
    def namespace(self) -> str:
        return self.slot.workload.namespace

    @property
    def container_names(self) -> tuple[str, ...]:
        return self.slot.workload.container_names

    @property
    def pending(self) -> bool:
        return self.running_after == math.inf


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything the Metrics API would report for one time bucket.

    ``pod_usage[i]`` holds (cpu nanocores, memory KiB) pairs, flattened, for the containers of
    ``pods[i]`` in order; ``node_usage[n]`` is (cpu nanocores, memory KiB) of node ``n``.
    """

    bucket: int
    timestamp: int
    nodes: tuple[NodeSpec, ...]
    pods: Sequence[PodInstance]
    pod_usage: Sequence[tuple[int, ...]]
    node_usage: Sequence[tuple[int, int]]
    node_offsets: Sequence[int] = ()
    """Seconds node ``n``'s samples (and its pods') are stamped before ``timestamp``
    (``SimulatorConfig.scrape_spread_seconds``); empty: none."""
    _index: dict[tuple[str, str], int] = field(default_factory=dict, repr=False, compare=False)

    def node_timestamp(self, n: int) -> int:
        """The timestamp of node ``n``'s samples and of its pods' (Unix seconds)."""
        return self.timestamp - self.node_offsets[n] if self.node_offsets else self.timestamp

    def find_pod(self, namespace: str, name: str) -> int | None:
        """Position of a running pod in ``pods``, or None."""
        if not self._index and self.pods:
            self._index.update(((p.namespace, p.name), i) for i, p in enumerate(self.pods))
        return self._index.get((namespace, name))


@dataclass(frozen=True, slots=True)
class ContainerMetrics:
    name: str
    cpu_nanocores: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class PodMetrics:
    namespace: str
    name: str
    node: str
    labels: Mapping[str, str]
    timestamp: int
    window_ms: int
    containers: tuple[ContainerMetrics, ...]


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    name: str
    labels: Mapping[str, str]
    timestamp: int
    window_ms: int
    cpu_nanocores: int
    memory_bytes: int


def _mix(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 finalizer steps), stable across processes."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = ((h ^ (part & _MASK64)) * 0xBF58476D1CE4E5B9) & _MASK64
        h ^= h >> 31
    h = (h * 0x94D049BB133111EB) & _MASK64
    return h ^ (h >> 29)


@functools.cache
def _suffix_tables() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Shuffled spellings of every 3- and 2-character suffix half (fixed, seed-independent)."""
    rng = random.Random("simulator/suffix-tables")
    high = [encode_safe(i, 3) for i in range(len(SAFE_ALPHABET) ** 3)]
    low = [encode_safe(i, 2) for i in range(len(SAFE_ALPHABET) ** 2)]
    rng.shuffle(high)
    rng.shuffle(low)
    return tuple(high), tuple(low)


def _suffix(workload: Workload, ordinal: int, generation: int) -> str:
    """A 5-character generated-name suffix, distinct for every live replica of a workload.

    (ordinal, generation) maps injectively into 27**5 values; an affine permutation and shuffled
    spelling tables (both bijections) make neighbouring replicas look unrelated.
    """
    replicas = max(workload.replicas, 1)
    x = ordinal + replicas * (generation % (SUFFIX_SPACE // replicas))
    y = (workload.suffix_multiplier * x + workload.suffix_offset) % SUFFIX_SPACE
    high, low = _suffix_tables()
    hi, lo = divmod(y, len(low))
    return high[(hi + 7919 * lo) % len(high)] + low[lo]


class ClusterModel:
    """The simulated cluster. Thread-safe; frames are cached for the two latest buckets."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._clock_origin = clock()
        self._resolution = config.resolution_seconds
        self._topology: Topology = build_topology(
            nodes=config.nodes,
            pods=config.pods,
            seed=config.seed,
            namespaces=config.namespace_names,
            churn_per_hour=config.churn_per_hour,
        )
        self._node_index = {n.name: n.index for n in self._topology.nodes}
        self._pending_threshold = config.pending_fraction * 65536.0
        self._instances: list[PodInstance | None] = [None] * len(self._topology.slots)
        self._frames: dict[int, Frame] = {}
        self._lock = threading.Lock()
        spread = config.scrape_spread_seconds
        # A fixed, well-mixed offset per node (not drawn from the seeded generators, so the
        # rest of the model is the same with or without a spread).
        self._node_offsets: tuple[int, ...] = (
            tuple((n * 0x9E3779B1 >> 11) % spread for n in range(len(self._topology.nodes)))
            if spread
            else ()
        )
        self._hashes: dict[tuple[str, str, int], str] = {}
        self._labels: dict[tuple[int, int], tuple[Mapping[str, str], Mapping[str, str]]] = {}
        self._first_rollouts, self._slot_rollouts = self._plan_rollouts()

    @property
    def config(self) -> SimulatorConfig:
        return self._config

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return self._topology.nodes

    @property
    def slots(self) -> tuple[PodSlot, ...]:
        return self._topology.slots

    @property
    def started_at(self) -> float:
        """The simulated time when the model was made."""
        start = self._config.start_time
        return self._clock_origin if start is None else start

    def node(self, name: str) -> NodeSpec | None:
        index = self._node_index.get(name)
        return None if index is None else self._topology.nodes[index]

    def now(self) -> float:
        """The simulated time in Unix seconds."""
        now = self._clock()
        if self._config.start_time is None:
            return now
        return self._config.start_time + (now - self._clock_origin)

    def bucket_of(self, at: float) -> int:
        return math.floor(at / self._resolution)

    def frame(self, at: float | None = None) -> Frame:
        """The metrics of the bucket containing ``at`` (default: now)."""
        bucket = self.bucket_of(self.now() if at is None else at)
        with self._lock:
            frame = self._frames.get(bucket)
            if frame is None:
                frame = self._compute(bucket)
                self._frames[bucket] = frame
                for old in sorted(self._frames)[:-2]:
                    del self._frames[old]
            return frame

    def node_metrics(self, at: float | None = None) -> tuple[NodeMetrics, ...]:
        frame = self.frame(at)
        return tuple(
            NodeMetrics(
                name=node.name,
                labels=node.labels,
                timestamp=frame.node_timestamp(node.index),
                window_ms=node.window_ms,
                cpu_nanocores=cpu,
                memory_bytes=kib * 1024,
            )
            for node, (cpu, kib) in zip(frame.nodes, frame.node_usage, strict=True)
        )

    def pod_metrics(self, at: float | None = None) -> tuple[PodMetrics, ...]:
        frame = self.frame(at)
        nodes = frame.nodes
        return tuple(
            PodMetrics(
                namespace=pod.namespace,
                name=pod.name,
                node=nodes[pod.node].name,
                labels=pod.labels,
                timestamp=frame.node_timestamp(pod.node),
                window_ms=nodes[pod.node].window_ms,
                containers=tuple(
                    ContainerMetrics(name, usage[2 * i], usage[2 * i + 1] * 1024)
                    for i, name in enumerate(pod.container_names)
                ),
            )
            for pod, usage in zip(frame.pods, frame.pod_usage, strict=True)
        )

    def samples(self, at: float | None = None) -> tuple[Sample, ...]:
        """What a faithful recorder should store for this bucket: nodes, then containers."""
        out = [
            Sample(
                SeriesKey.for_node(n.name),
                n.timestamp * 1000,
                n.window_ms,
                n.cpu_nanocores,
                n.memory_bytes,
            )
            for n in self.node_metrics(at)
        ]
        out.extend(
            Sample(
                SeriesKey.for_container(p.namespace, p.name, c.name),
                p.timestamp * 1000,
                p.window_ms,
                c.cpu_nanocores,
                c.memory_bytes,
            )
            for p in self.pod_metrics(at)
            for c in p.containers
        )
        return tuple(out)

    def generation(self, slot: PodSlot, bucket: int) -> int:
        """Which occupant of ``slot`` is there in ``bucket``: `_compute`'s rule (its churn
        generation, with the revision above bit 40; both only grow)."""
        t = bucket * self._resolution
        life = slot.lifetime_seconds
        generation = int((t + slot.offset_seconds) // life) if life else 0
        roll = self._slot_rollouts[slot.number] if self._slot_rollouts else None
        if roll is not None and t >= roll[1]:
            generation |= (int((t - roll[1]) // roll[0]) + 1) << _REVISION_SHIFT
        return generation

    def occupant(self, slot: PodSlot, generation: int) -> PodInstance:
        """The pod of ``slot``'s ``generation``. It exists (Pending) from ``started_at`` on (the
        later of its churn's and its revision's starts) and runs, with metrics, in the buckets
        whose start is at or after ``running_after``."""
        life = slot.lifetime_seconds
        churn, revision = generation & _CHURN_MASK, generation >> _REVISION_SHIFT
        started = churn * life - slot.offset_seconds if life else -math.inf
        if revision:
            period, first = self._slot_rollouts[slot.number]  # type: ignore[misc]
            rolled = first + (revision - 1) * period
            if rolled >= started:  # replaced by the rollout: ready when its predecessor goes
                return self._instance(slot, generation, rolled, surged=True)
        return self._instance(slot, generation, started)

    # --- rollouts ------------------------------------------------------------------------

    def _plan_rollouts(
        self,
    ) -> tuple[dict[tuple[str, str], float], list[tuple[float, float] | None]]:
        """(each Deployment's first rollout instant, each slot's (period, first replacement))."""
        period = self._config.rollout_every_seconds
        firsts: dict[tuple[str, str], float] = {}
        per_slot: list[tuple[float, float] | None] = []
        if not period:
            return firsts, per_slot
        seed, start = self._config.seed, self.started_at
        for slot in self._topology.slots:
            w = slot.workload
            if w.kind != "Deployment" or w.batch:  # a batch profile is shown as a Job
                per_slot.append(None)
                continue
            key = (w.namespace, w.name)
            first = firsts.get(key)
            if first is None:
                first = firsts[key] = start + period * (
                    _mix(seed, *(ord(c) for c in f"{w.namespace}/{w.name}")) / 2.0**64
                )
            stagger = min(self._resolution, period / (2 * max(w.replicas, 1)))
            per_slot.append((period, first + slot.replica * stagger))
        return firsts, per_slot

    def revision(self, workload: Workload, at: float) -> int:
        """How many times ``workload`` has rolled out by ``at`` (0 without rollouts)."""
        first = self._first_rollouts.get((workload.namespace, workload.name))
        if first is None or at < first:
            return 0
        return int((at - first) // self._config.rollout_every_seconds) + 1

    def rollout_instant(self, workload: Workload, revision: int) -> float:
        """When ``workload``'s rollout to ``revision`` (1, 2, ...) began."""
        first = self._first_rollouts[(workload.namespace, workload.name)]
        return first + (revision - 1) * self._config.rollout_every_seconds

    def template_hash(self, workload: Workload, revision: int) -> str:
        """The ``pod-template-hash`` of ``workload``'s ``revision``."""
        if not revision:
            return workload.template_hash
        key = (workload.namespace, workload.name, revision)
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) > _CACHE_LIMIT:
                self._hashes.clear()
            h = _mix(self._config.seed, revision, *(ord(c) for c in f"{key[0]}/{key[1]}"))
            found = self._hashes[key] = encode_safe(h >> 16, 10)
        return found

    def _revision_labels(self, slot: PodSlot, revision: int) -> Mapping[str, str]:
        key = (id(slot.labels), revision)
        cached = self._labels.get(key)
        if cached is None or cached[0] is not slot.labels:
            if len(self._labels) > _CACHE_LIMIT:
                self._labels.clear()
            labels = dict(slot.labels)
            labels["pod-template-hash"] = self.template_hash(slot.workload, revision)
            cached = self._labels[key] = (slot.labels, MappingProxyType(labels))
        return cached[1]

    def _instance(
        self, slot: PodSlot, generation: int, started_at: float, *, surged: bool = False
    ) -> PodInstance:
        """The pod; ``surged``: made by a rolling update, which keeps the old pod until the new
        one is ready, so it runs from ``started_at`` and was created its start-up time before
        (it is listed from ``started_at`` only: a slot holds one pod at a time)."""
        h = _mix(self._config.seed, slot.number, generation)
        if slot.pinned_node is not None:
            node = slot.pinned_node
        else:
            workers = self._topology.worker_nodes
            node = workers[h % len(workers)]
        revision = generation >> _REVISION_SHIFT
        labels = slot.labels
        prefix = slot.name_prefix
        if revision:
            labels = self._revision_labels(slot, revision)
            prefix = f"{slot.workload.name}-{labels['pod-template-hash']}-"
        name = slot.fixed_name or prefix + _suffix(slot.workload, slot.replica, generation)
        startup = self._resolution * (1.0 + 2.0 * (h >> 48) / 65536.0)
        if surged:  # scheduled: a rolling update waits for it before removing the old pod
            running_after, started_at = started_at, started_at - startup
        elif slot.may_stay_pending and ((h >> 16) & 0xFFFF) < self._pending_threshold:
            running_after = math.inf
        else:
            running_after = started_at + startup
        return PodInstance(
            slot, generation, name, node, started_at, running_after, revision, labels
        )

    def _compute(self, bucket: int) -> Frame:
        t = bucket * self._resolution
        topo = self._topology
        n_nodes = len(topo.nodes)
        rand = random.Random(f"usage/{self._config.seed}/{bucket}").random
        noise = [rand() for _ in range(2 * (topo.container_count + n_nodes))]
        day = 2.0 * math.pi * (t % _DAY_SECONDS) / _DAY_SECONDS
        wave = [math.sin(day + k * math.pi / 4.0) for k in range(8)]

        node_cpu = [0] * n_nodes
        node_kib = [0] * n_nodes
        pods: list[PodInstance] = []
        pod_usage: list[tuple[int, ...]] = []
        instances = self._instances
        rollouts = self._slot_rollouts
        # The hot loop: ~200,000 containers for a 150,000-pod cluster, so locals only.
        for slot in topo.slots:
            index = slot.number
            life = slot.lifetime_seconds
            offset = slot.offset_seconds
            generation = int((t + offset) // life) if life else 0  # `generation`, inlined
            if rollouts and (roll := rollouts[index]) is not None and t >= roll[1]:
                generation |= (int((t - roll[1]) // roll[0]) + 1) << _REVISION_SHIFT
            pod = instances[index]
            if pod is None or pod.generation != generation:
                pod = instances[index] = self.occupant(slot, generation)
            if t < pod.running_after:
                continue
            values: list[int] = []
            pod_cpu = pod_kib = 0
            for k, cpu_base, memory_base, amplitude, phase, flags in slot.containers:
                u = noise[k]
                v = noise[k + 1]
                wave_factor = 1.0 + amplitude * wave[phase]
                if flags & IDLE and u < 0.3:
                    cpu = 0
                else:
                    level = cpu_base * wave_factor * (0.7 + 0.6 * u)
                    if flags & BURST and v > 0.97:
                        level *= 3.0 + 100.0 * (v - 0.97)
                    cpu = int(level)
                pages = memory_base * (0.85 + 0.15 * wave_factor) * (0.98 + 0.04 * v)
                if flags & LEAK:
                    pages *= 1.0 + 0.5 * min((t - pod.started_at) / _DAY_SECONDS, 1.0)
                kib = (int(pages) + 1) * PAGE_KIB
                values += (cpu, kib)
                pod_cpu += cpu
                pod_kib += kib
            pods.append(pod)
            pod_usage.append(tuple(values))
            node_cpu[pod.node] += pod_cpu
            node_kib[pod.node] += pod_kib

        offset = 2 * topo.container_count
        node_usage = []
        for n, node in enumerate(topo.nodes):
            u = noise[offset + 2 * n]
            v = noise[offset + 2 * n + 1]
            cpu = node_cpu[n] + int(node.overhead_cpu_nanocores * (0.8 + 0.4 * u))
            pages = int(node.overhead_memory_pages * (0.97 + 0.06 * v))
            node_usage.append((cpu, node_kib[n] + pages * PAGE_KIB))
        return Frame(
            bucket=bucket,
            timestamp=math.floor(t),
            nodes=topo.nodes,
            pods=pods,
            pod_usage=pod_usage,
            node_usage=node_usage,
            node_offsets=self._node_offsets,
        )

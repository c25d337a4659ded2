"""Right-sizing: a request and limit proposal per workload and container name, from the usage of
every pod the workload had over the window (pods since replaced included), beside the current
requests and limits, with the monthly saving (issue 14; krr's "simple" strategy is the model,
these defaults are ours).

The default strategy (every number is a ``Strategy`` field, a ``recorder recommend`` flag and a
``/api/v1/recommendations`` parameter):

- **CPU request** = the 95th percentile of the CPU usage samples of the last 14 days, pooled
  across the workload's pods per container name, rounded up to a whole millicore; **no CPU
  limit** (an existing one is removed: a limit throttles a container that has spare cores
  around it).
- **memory request = memory limit** = the peak (the exact maximum sample) plus 15 %, rounded up
  to a whole MiB.
- **No proposal** for a container name with fewer than 100 samples pooled ("too little
  history"), nor for a resource a HorizontalPodAutoscaler scales the workload on (changing the
  request would change its scaling); the reason is given.

Where the numbers come from. The percentile is read from the block statistics' quantile
sketches (``recorder.stats.sketch``): within ``RELATIVE_ACCURACY`` (1 %) relative of the exact
percentile of the raw samples (exactly 0 when that is 0), so a 14-day recommendation over
300,000 containers reads day rollups and hourly statistics, not 1.2 billion samples, and still
answers once the full-resolution payloads have expired. Edge blocks are decoded and added to
the sketch. The maximum, the sample count, the coverage and the replicas are exact.

- **coverage**: the share of the window the container name had samples (``engine.covered_ms``
  of its pods' series: a rollout's pods one after another cover the window once).
- **replicas**: the average number of running pods: their time with samples added up
  (``count x interval``, within each pod's span) divided by the time from the container name's
  first sample in the window to its last (plus one interval). So a workload seen for a day is
  not diluted by the 13 days before it existed, and a CronJob's idle hours count.
- **saving per month** = (current request - proposed request) x replicas x 730 h, in
  core-hours and GiB-hours (negative: the proposal asks for more). An unset request counts as 0.
- **throttled**: the container's CPU usage reached ``throttle_ratio`` (90 %) of its CPU limit
  at least once; **OOM-killed**: a pod of the workload reported ``lastState.terminated.reason``
  OOMKilled. Usage under a cap under-states the need: the proposal says so.

The window starts at the block boundary at or before ``end - window`` (whole blocks are read
from their statistics, not decoded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import Connection

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.gcpause import paused
from recorder.query.engine import (
    DEFAULT_MAX_SAMPLES,
    HistoryReader,
    covered_ms,
    sliced_statistics,
)
from recorder.query.scan import Scan, Unit
from recorder.query.workloads import (
    ContainerResources,
    WorkloadFilter,
    WorkloadKey,
    container_requests,
    current_requests,
    workload_members,
)
from recorder.stats.buckets import Accumulator
from recorder.stats.quantiles import merged_quantiles
from recorder.stats.sketch import RELATIVE_ACCURACY
from recorder.store.objects import read_hpas
from recorder.timeutil import DAY_MS, HOUR_MS, floor_to

__all__ = [
    "HOURS_PER_MONTH",
    "MIB",
    "NANOCORES_PER_MILLICORE",
    "Current",
    "Proposal",
    "Recommendation",
    "Report",
    "Strategy",
    "Usage",
    "cpu_request_for",
    "memory_for",
    "propose",
    "recommend",
]

HOURS_PER_MONTH = 730
MIB = 2**20
GIB = 2**30
NANOCORES_PER_MILLICORE = 10**6
NANOCORES_PER_CORE = 10**9


@dataclass(frozen=True, slots=True)
class Strategy:
    """The strategy's parameters (README "Right-sizing")."""

    window_ms: int = 14 * DAY_MS
    cpu_percentile: float = 95.0
    memory_buffer_percent: float = 15.0
    min_points: int = 100
    throttle_ratio: float = 0.9
    allow_hpa: bool = False
    """Propose even for a resource an HPA scales the workload on."""

    def __post_init__(self) -> None:
        if not 0 < self.cpu_percentile <= 100:
            raise QueryError(f"cpu percentile {self.cpu_percentile:g} is not within (0, 100]")
        if not 0 <= self.memory_buffer_percent <= 1000:
            raise QueryError(
                f"memory buffer {self.memory_buffer_percent:g} % is not within 0..1000"
            )
        if not 1 <= self.min_points <= 10**9:
            raise QueryError(f"minimum points {self.min_points} is not within 1..1000000000")
        if not 0 < self.throttle_ratio <= 1:
            raise QueryError(f"throttle ratio {self.throttle_ratio:g} is not within (0, 1]")
        if self.window_ms < HOUR_MS:
            raise QueryError("the window must be at least 1h")


@dataclass(frozen=True, slots=True)
class Current:
    """A container's requests and limits (None: not set), and what its pods went through."""

    cpu_request_nanocores: int | None = None
    cpu_limit_nanocores: int | None = None
    memory_request_bytes: int | None = None
    memory_limit_bytes: int | None = None
    oom_killed: bool = False
    known: bool = True
    """False when no pod's requests and limits were recorded (cluster objects not read)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A container name's pooled usage over the window."""

    points: int
    cpu_quantile_nanocores: float
    cpu_max_nanocores: int
    memory_max_bytes: int
    coverage: float
    replicas: float
    pods: int


@dataclass(frozen=True, slots=True)
class Proposal:
    """One resource's current and proposed request and limit (nanocores or bytes; None: not
    set, or no proposal when ``reason`` says why)."""

    resource: Resource
    current_request: int | None
    current_limit: int | None
    request: int | None
    limit: int | None
    reason: str | None = None

    @property
    def proposed(self) -> bool:
        return self.reason is None

    @property
    def request_change(self) -> int | None:
        """Proposed request - current (an unset one counts as 0); None without a proposal."""
        if self.request is None:
            return None
        return self.request - (self.current_request or 0)

    def saving_per_month(self, replicas: float) -> float | None:
        """(current - proposed request) x replicas x 730 h, in core-hours or GiB-hours."""
        change = self.request_change
        if change is None:
            return None
        per = NANOCORES_PER_CORE if self.resource is Resource.CPU else GIB
        return -change * replicas * HOURS_PER_MONTH / per


@dataclass(frozen=True, slots=True)
class Recommendation:
    cluster: str
    namespace: str
    kind: str
    name: str
    container: str
    usage: Usage
    cpu: Proposal
    memory: Proposal
    throttled: bool
    oom_killed: bool
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    start_ms: int
    end_ms: int
    strategy: Strategy
    recommendations: list[Recommendation]
    relative_error: float = RELATIVE_ACCURACY


# --- the strategy, pure ---------------------------------------------------------------------


def cpu_request_for(quantile_nanocores: float) -> int:
    """The proposed CPU request: rounded up to a whole millicore, at least 1m (nanocores)."""
    millis = max(1, math.ceil(quantile_nanocores / NANOCORES_PER_MILLICORE - 1e-9))
    return millis * NANOCORES_PER_MILLICORE


def memory_for(peak_bytes: int, buffer_percent: float) -> int:
    """The proposed memory request and limit: the peak plus ``buffer_percent``, rounded up to
    a whole MiB (computed exactly, the percentage as written)."""
    wanted = Fraction(peak_bytes) * (1 + Fraction(str(buffer_percent)) / 100)
    return max(1, math.ceil(wanted / MIB)) * MIB


UNPATCHABLE = {
    "Job": "no patch: a Job's pod template cannot be changed once the Job exists; set these "
    "where the Job is made (its manifest, chart or the program creating it)",
    "Pod": "no patch: a pod without a controller cannot have its resources changed; set these "
    "where it is made (for a static pod, its manifest on the node)",
}
"""Workload kinds whose resources no patch can change, and what their notes say instead."""


def propose(
    usage: Usage, current: Current, hpa: dict[str, str], strategy: Strategy, *, kind: str = ""
) -> tuple[Proposal, Proposal, bool, tuple[str, ...]]:
    """The CPU and memory proposals for one container name of a workload of ``kind``, whether
    it was throttled, and the notes. ``hpa``: resource -> the name of an HPA scaling the
    workload on it."""
    notes: list[str] = []
    reasons: dict[Resource, str | None] = {Resource.CPU: None, Resource.MEMORY: None}
    if usage.points < strategy.min_points:
        short = (
            f"too little history: {usage.points} data points of the {strategy.min_points} "
            f"needed (coverage {usage.coverage:.1%} of the window)"
        )
        reasons = {r: short for r in reasons}
    for resource in (Resource.CPU, Resource.MEMORY):
        name = hpa.get(resource.value)
        if name is not None and not strategy.allow_hpa and reasons[resource] is None:
            reasons[resource] = (
                f"HorizontalPodAutoscaler {name} scales this workload on {resource.value}: a "
                "request change would change its scaling (allow it with allow-hpa)"
            )
    limit = current.cpu_limit_nanocores or 0
    throttled = limit > 0 and usage.cpu_max_nanocores >= strategy.throttle_ratio * limit
    if throttled:
        notes.append(
            f"throttled: CPU usage reached {usage.cpu_max_nanocores / limit:.0%} of its limit, "
            "so usage under-states the need and the proposed CPU request may be too low"
        )
    if current.oom_killed:
        notes.append(
            "OOM-killed (lastState): memory was capped by its limit, so the peak under-states "
            "the need and the proposed memory may be too low"
        )
    if not current.known:
        notes.append("requests and limits not recorded (are cluster objects read?)")
    if kind in UNPATCHABLE:
        notes.append(UNPATCHABLE[kind])
    cpu = Proposal(
        Resource.CPU,
        current.cpu_request_nanocores,
        current.cpu_limit_nanocores,
        None if reasons[Resource.CPU] else cpu_request_for(usage.cpu_quantile_nanocores),
        None,
        reasons[Resource.CPU],
    )
    memory_value = (
        None
        if reasons[Resource.MEMORY]
        else memory_for(usage.memory_max_bytes, strategy.memory_buffer_percent)
    )
    memory = Proposal(
        Resource.MEMORY,
        current.memory_request_bytes,
        current.memory_limit_bytes,
        memory_value,
        memory_value,
        reasons[Resource.MEMORY],
    )
    return cpu, memory, throttled, tuple(notes)


# --- reading --------------------------------------------------------------------------------

GroupKey = tuple[str, str, str, str, str]
"""(cluster, namespace, kind, name, container)"""


def _currents(
    history: dict[tuple[WorkloadKey, str], list[ContainerResources]],
    pods_of: dict[GroupKey, set[str]],
) -> dict[GroupKey, Current]:
    """Each container name's current requests and limits (``workloads.current_requests``: the
    newest row of the pod that appeared last), OOM-killed when a row of one of its pods with
    samples in the window says so."""
    now = current_requests(history)
    out: dict[GroupKey, Current] = {}
    for key, pods in pods_of.items():
        group = (WorkloadKey(*key[:4]), key[4])
        rows = history.get(group, [])
        oom = any(r.last_termination_reason == "OOMKilled" for r in rows if r.pod in pods)
        found = now.get(group)
        if found is None:
            out[key] = Current(oom_killed=oom, known=False)
        else:
            out[key] = Current(
                found.cpu_request_nanocores,
                found.cpu_limit_nanocores,
                found.memory_request_bytes,
                found.memory_limit_bytes,
                oom,
            )
    return out


def _hpas(conn: Connection, where: WorkloadFilter) -> dict[WorkloadKey, dict[str, str]]:
    """Workload -> resource -> the name of an HPA that scales it on that resource."""
    out: dict[WorkloadKey, dict[str, str]] = {}
    found = read_hpas(conn, cluster=where.cluster, namespaces=where.namespaces)
    for cluster, namespace, name, kind, target, resources in found:
        for resource in filter(None, resources.split(",")):
            key = WorkloadKey(cluster, namespace, kind, target)
            out.setdefault(key, {}).setdefault(resource, name)
    return out


def _own_ms(acc: Accumulator) -> int:
    """The time one series had samples: ``count x interval``, within its span."""
    if acc.interval_ms <= 0 or acc.count == 0:
        return 0
    return min(acc.count * acc.interval_ms, acc.last_ms - acc.first_ms + acc.interval_ms)


def _replicas(accs: Sequence[Accumulator]) -> float:
    """Pod-time with samples / the time from the first sample in the window to the last (plus
    an interval): each pod's time lies within that span, so a workload never has more replicas
    than pods at once."""
    timed = [a for a in accs if a.interval_ms > 0 and a.count]
    if not timed:  # single samples: each pod counts once
        return float(sum(1 for a in accs if a.count))
    first = min(a.first_ms for a in timed)
    last = max(a.last_ms + a.interval_ms for a in timed)
    return sum(_own_ms(a) for a in timed) / max(last - first, 1)


@paused()
def recommend(
    reader: HistoryReader,
    where: WorkloadFilter,
    strategy: Strategy,
    end_ms: int,
    *,
    max_rows: int = 100_000,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Report:
    """Recommendations for every (workload, container name) of ``where`` with samples in the
    window that ends at ``end_ms``, in (cluster, namespace, kind, name, container) order."""
    start_ms = max(floor_to(end_ms - strategy.window_ms, reader.block_ms), 0)
    window_ms = max(end_ms - start_ms, 1)
    with reader.reading() as conn:
        members = workload_members(conn, where)
        units: list[Unit] = []
        groups: dict[GroupKey, list[int]] = {}
        unit_pods: list[str] = []
        for workload, found in members.items():
            for series in found:
                groups.setdefault((*workload, series.container), []).append(len(units))
                unit_pods.append(series.pod)
                units.append(Unit((series.id,), (series.id,)))
        results: dict[Resource, dict[int, Accumulator]] = {Resource.CPU: {}, Resource.MEMORY: {}}
        if units:
            scan = Scan(
                units,
                start_ms=start_ms,
                end_ms=end_ms,
                block_ms=reader.block_ms,
                max_samples=max_samples,
                stepped=False,
            )
            # A slice of the series at a time (``engine.sliced_statistics``): each keeps its
            # accumulators, not its samples (a window's head of a large cluster: millions).
            for chosen, found_stats in sliced_statistics(
                conn, scan, (Resource.CPU, Resource.MEMORY), ("max", "sketch"), squares=False
            ):
                for r, accs in results.items():
                    for (u, _b), acc in found_stats[r].items():
                        accs[chosen[u]] = acc
                del found_stats
        cpu_of, memory_of = results[Resource.CPU], results[Resource.MEMORY]
        present = {
            key: [i for i in indexes if i in cpu_of and i in memory_of]
            for key, indexes in groups.items()
        }
        present = {key: found for key, found in present.items() if found}
        if len(present) > max_rows:
            raise QueryError(
                f"more than {max_rows} workload containers match: filter by namespace, kind or name"
            )
        keys = sorted(present)
        pods_of = {key: {unit_pods[i] for i in present[key]} for key in keys}
        history = container_requests(conn, where, until_ms=end_ms)
        hpas = _hpas(conn, where)
    currents = _currents(history, pods_of)
    q = strategy.cpu_percentile / 100
    quantiles = merged_quantiles(
        [[p for i in present[key] for p in cpu_of[i].sketch_parts()] for key in keys], q
    )
    out: list[Recommendation] = []
    for key, quantile in zip(keys, quantiles, strict=True):
        indexes = present[key]
        cpu_accs = [cpu_of[i] for i in indexes]
        usage = Usage(
            points=sum(a.count for a in cpu_accs),
            cpu_quantile_nanocores=quantile,
            cpu_max_nanocores=max(a.maximum for a in cpu_accs),
            memory_max_bytes=max(memory_of[i].maximum for i in indexes),
            coverage=min(covered_ms(cpu_accs) / window_ms, 1.0),
            replicas=_replicas(cpu_accs),
            pods=len(indexes),
        )
        current = currents[key]
        cpu, memory, throttled, notes = propose(
            usage, current, hpas.get(WorkloadKey(*key[:4]), {}), strategy, kind=key[2]
        )
        out.append(Recommendation(*key, usage, cpu, memory, throttled, current.oom_killed, notes))
    return Report(start_ms, end_ms, strategy, out, RELATIVE_ACCURACY)

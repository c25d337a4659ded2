"""Requests, limits and restart histories of simulated containers, drawn against their usage.

Each (workload, container) gets a *plan*, a pure function of the seed and the workload, and the
same for every pod of the workload (they share one template). Plans are chosen relative to the
container's simulated usage (`topology.ContainerParams`: mean level and peak), so right-sizing
has known answers:

============== ====== ==============================================================
plan           share  requests and limits
============== ====== ==============================================================
over           ~55 %  requests 2-6x the mean CPU and 1.5-3x the peak memory; some with
                      limits (CPU limit 2x, memory limit = or 2x the request), some not
under          ~12 %  CPU request 0.3-0.7x the mean, memory request 0.6x the mean
guaranteed     ~10 %  requests = limits, 1.5x the peaks
none           ~10 %  nothing (BestEffort when the whole pod is so)
throttled       ~7 %  CPU limit just above the peak usage (never for bursting containers)
oom             ~6 %  memory limit just above the peak; every pod shows OOMKilled restarts
============== ====== ==============================================================

Limits never sit below the model's peak usage (bursts and leaks included), as a real kernel
would enforce them. As the API server does on admission, a limit without a request makes the
request equal to the limit. ``qos_class`` applies Kubernetes' rules.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from recorder.simulator.catalog import BURST, LEAK
from recorder.simulator.topology import MIB_PAGES, PodSlot, Workload

__all__ = ["ContainerResources", "Plan", "draw", "plan_workload", "qos_class", "revised"]

Plan = Literal["over", "under", "guaranteed", "none", "throttled", "oom"]
QosClass = Literal["Guaranteed", "Burstable", "BestEffort"]

_NOISE_MAX = 1.3
"""Usage noise spans 0.7-1.3 of the level (`model._compute`)."""
_BURST_MAX = 6.0
"""A burst multiplies CPU by at most 3 + 100 x 0.03."""


@dataclass(frozen=True, slots=True)
class ContainerResources:
    """One container's resources (None: not set) and what its pods have been through."""

    name: str
    plan: Plan
    cpu_request_millicores: int | None
    cpu_limit_millicores: int | None
    memory_request_mib: int | None
    memory_limit_mib: int | None
    restarts: int
    """Restart count of every pod of the workload (they share the history, for simplicity)."""
    oom_killed: bool
    """The last termination was an OOM kill (``lastState.terminated.reason``)."""


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) from the seed and some names, stable across processes."""
    text = "/".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64


def _millicores(nanocores: float) -> int:
    """Rounded up to a value people write: 10m steps below one core, 50m steps above."""
    millis = nanocores / 1e6
    step = 10 if millis < 1000 else 50
    return max(step, math.ceil(millis / step) * step)


def _mib(mib: float) -> int:
    step = 16 if mib < 1024 else 128
    return max(step, math.ceil(mib / step) * step)


def _plan(u: float, bursts: bool) -> Plan:
    if u < 0.55:
        return "over"
    if u < 0.67:
        return "under"
    if u < 0.77:
        return "guaranteed"
    if u < 0.87:
        return "none"
    if u < 0.94 and not bursts:
        return "throttled"
    if u < 0.94:
        return "over"
    return "oom"


def plan_workload(
    seed: int, workload: Workload, slots: Sequence[PodSlot]
) -> tuple[ContainerResources, ...]:
    """The plans of ``workload``'s containers, from its pod ``slots`` (at least one)."""
    out = []
    for c, name in enumerate(workload.container_names):
        params = [slot.containers[c] for slot in slots]
        _, _, _, amplitude, _, flags = params[0]
        mean_cpu = sum(p[1] for p in params) / len(params)
        mean_mib = sum(p[2] for p in params) / len(params) / MIB_PAGES
        peak_cpu = max(p[1] for p in params) * (1.0 + amplitude) * _NOISE_MAX
        if flags & BURST:
            peak_cpu *= _BURST_MAX
        peak_mib = max(p[2] for p in params) / MIB_PAGES * (1.0 + 0.15 * amplitude) * 1.02
        if flags & LEAK:
            peak_mib *= 1.5
        key = (workload.namespace, workload.name, name)
        u, v, w = (draw(seed, "resources", *key, k) for k in ("plan", "size", "limits"))
        plan = _plan(u, bool(flags & BURST))
        restarts = 1 + int(6 * v) if plan == "oom" else (1 if w > 0.9 else 0)
        cpu_req = cpu_lim = mem_req = mem_lim = None
        if plan == "over":
            cpu_req = _millicores(mean_cpu * (2.0 + 4.0 * v))
            mem_req = _mib(peak_mib * (1.5 + 1.5 * v))
            if w < 0.5:
                cpu_lim = max(2 * cpu_req, _millicores(peak_cpu))
                mem_lim = mem_req * (1 if w < 0.25 else 2)
        elif plan == "under":
            cpu_req = _millicores(mean_cpu * (0.3 + 0.4 * v))
            mem_req = _mib(mean_mib * 0.6)
            if w < 0.5:
                mem_lim = _mib(peak_mib * 2.0)
        elif plan == "guaranteed":
            cpu_req = cpu_lim = _millicores(peak_cpu * 1.5)
            mem_req = mem_lim = _mib(peak_mib * 1.5)
        elif plan == "throttled":
            cpu_lim = _millicores(peak_cpu * 1.02)
            cpu_req = _millicores(cpu_lim * 1e6 * 0.5)
            mem_req = _mib(peak_mib * 1.2)
        elif plan == "oom":
            mem_lim = _mib(peak_mib * 1.02)
            cpu_req = _millicores(mean_cpu * 1.5)
            if w < 0.5:
                mem_req = _mib(mean_mib)
        if cpu_req is None and cpu_lim is not None:
            cpu_req = cpu_lim  # defaulted on admission
        if mem_req is None and mem_lim is not None:
            mem_req = mem_lim
        out.append(
            ContainerResources(
                name, plan, cpu_req, cpu_lim, mem_req, mem_lim, restarts, plan == "oom"
            )
        )
    return tuple(out)


def qos_class(containers: Sequence[ContainerResources]) -> QosClass:
    """Kubernetes' QoS class of a pod with these containers (cpu and memory only)."""
    requests = [(c.cpu_request_millicores, c.memory_request_mib) for c in containers]
    limits = [(c.cpu_limit_millicores, c.memory_limit_mib) for c in containers]
    if all(r == (None, None) for r in requests) and all(lim == (None, None) for lim in limits):
        return "BestEffort"
    if all(None not in lim and lim == req for req, lim in zip(requests, limits, strict=True)):
        return "Guaranteed"
    return "Burstable"


def cpu_text(millicores: int) -> str:
    """A Kubernetes quantity in canonical form: ``250m``, ``1``, ``1500m``."""
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def memory_text(mib: int) -> str:
    """``512Mi``, ``2Gi``."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def revised(
    seed: int, workload: Workload, resources: Sequence[ContainerResources], revision: int
) -> tuple[ContainerResources, ...]:
    """The resources of a Deployment's template after ``revision`` rollouts: on about half of
    the revisions (drawn) someone trimmed the generous CPU requests (plan ``over``) by a fifth;
    on the others the template kept the first revision's. Limits never change, so the usage
    stays under them as the plans intend."""
    if draw(seed, "rollout-requests", workload.namespace, workload.name, revision) >= 0.5:
        return tuple(resources)
    return tuple(
        replace(c, cpu_request_millicores=_millicores(c.cpu_request_millicores * 0.8e6))
        if c.plan == "over" and c.cpu_request_millicores is not None
        else c
        for c in resources
    )

"""Recommendations (``recorder.query.recommend``) as ``recorder recommend`` and
``/api/v1/recommendations`` show them: a table like krr's, JSON, CSV, and a strategic-merge
patch per workload that ``kubectl patch`` applies (YAML documents, or one ``kubectl patch``
command per line with the patch as JSON).

Quantities: CPU in cores and memory in bytes in JSON and CSV; Kubernetes quantities
(``120m``, ``200Mi``) in the table and the patches. Savings per month in core-hours and
GiB-hours.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from recorder.domain import Resource
from recorder.query.formats import rfc3339, table
from recorder.query.recommend import (
    MIB,
    NANOCORES_PER_CORE,
    NANOCORES_PER_MILLICORE,
    Proposal,
    Recommendation,
    Report,
)
from recorder.timeutil import format_duration

__all__ = [
    "PATCHABLE",
    "cpu_text",
    "memory_text",
    "patches",
    "patches_json_lines",
    "patches_yaml",
    "recommendations_csv",
    "recommendations_json",
    "recommendations_table",
    "window_line",
]

PATCHABLE = {
    "Deployment": ("deployment", ("spec", "template", "spec")),
    "StatefulSet": ("statefulset", ("spec", "template", "spec")),
    "DaemonSet": ("daemonset", ("spec", "template", "spec")),
    "ReplicaSet": ("replicaset", ("spec", "template", "spec")),
    "CronJob": ("cronjob", ("spec", "jobTemplate", "spec", "template", "spec")),
}
"""Workload kinds a patch is made for: kubectl's resource name and the path to the pod spec.
A bare pod's resources and a Job's pod template cannot be changed (`recommend.UNPATCHABLE`
notes say so); a CronJob's template can, for its next Jobs."""


def cpu_text(nanocores: int) -> str:
    """A CPU quantity: ``120m``, ``2`` (whole millicores, rounded up)."""
    millis = -(-nanocores // NANOCORES_PER_MILLICORE)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_text(value: int) -> str:
    """A memory quantity: ``200Mi``, ``2Gi`` (whole MiB, rounded up); bytes below 1 MiB."""
    if value % MIB:
        return str(value) if value < MIB else f"{-(-value // MIB)}Mi"
    mib = value // MIB
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _quantity(resource: Resource, value: int | None) -> str:
    if value is None:
        return "unset"
    return cpu_text(value) if resource is Resource.CPU else memory_text(value)


def _signed(resource: Resource, change: int) -> str:
    text = _quantity(resource, abs(change))
    return f"+{text}" if change > 0 else f"-{text}" if change < 0 else "0"


def _request_cell(p: Proposal) -> str:
    current = _quantity(p.resource, p.current_request)
    if not p.proposed:
        return f"{current} -> ?"
    change = p.request_change or 0
    return f"{current} -> {_quantity(p.resource, p.request)} ({_signed(p.resource, change)})"


def _limit_cell(p: Proposal) -> str:
    current = _quantity(p.resource, p.current_limit)
    if not p.proposed:
        return f"{current} -> ?"
    return f"{current} -> {_quantity(p.resource, p.limit)}"


def _tags(r: Recommendation) -> str:
    tags = []
    hpa = [p.resource.value for p in (r.cpu, r.memory) if p.reason and "Autoscaler" in p.reason]
    if r.cpu.reason and r.cpu.reason.startswith("too little history"):
        tags.append("too little history")
    if hpa:
        tags.append(f"HPA on {'+'.join(hpa)}")
    if r.throttled:
        tags.append("throttled")
    if r.oom_killed:
        tags.append("OOMKilled")
    if any(n.startswith("requests and limits not recorded") for n in r.notes):
        tags.append("no requests recorded")
    if any(n.startswith("no patch: ") for n in r.notes):
        tags.append("no patch")
    return ", ".join(tags)


def _coverage(share: float) -> str:
    """``12.5%``; ``<0.1%`` rather than a 0.0% that reads as no data."""
    return "<0.1%" if 0 < share < 0.0005 else f"{share:.1%}"


def _saving(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"


def window_line(report: Report) -> str:
    s = report.strategy
    return (
        f"# {rfc3339(report.start_ms)} .. {rfc3339(report.end_ms)}: CPU request = "
        f"p{s.cpu_percentile:g} (within {report.relative_error:.0%}), no CPU limit; memory "
        f"request = limit = peak + {s.memory_buffer_percent:g}%; at least {s.min_points} "
        "points; saving per month at the average replicas\n"
    )


def recommendations_table(
    report: Report, *, all_namespaces: bool = True, headers: bool = True
) -> str:
    """krr-like: one row per workload container, current -> proposed (change); a ``CLUSTER``
    column first when the rows come from several clusters."""
    clusters = len({r.cluster for r in report.recommendations}) > 1
    header = [
        *(["CLUSTER"] if clusters else []),
        *(["NAMESPACE"] if all_namespaces else []),
        "KIND",
        "NAME",
        "CONTAINER",
        "PODS",
        "POINTS",
        "COVERAGE",
        "CPU REQUEST",
        "CPU LIMIT",
        "MEMORY REQUEST",
        "MEMORY LIMIT",
        "CPU SAVING/MONTH",
        "MEMORY SAVING/MONTH",
        "NOTES",
    ]
    rows = [
        [
            *([r.cluster] if clusters else []),
            *([r.namespace] if all_namespaces else []),
            r.kind,
            r.name,
            r.container,
            str(r.usage.pods),
            str(r.usage.points),
            f"{r.usage.coverage:.1%}",
            _request_cell(r.cpu),
            _limit_cell(r.cpu),
            _request_cell(r.memory),
            _limit_cell(r.memory),
            _saving(r.cpu.saving_per_month(r.usage.replicas), "core-h"),
            _saving(r.memory.saving_per_month(r.usage.replicas), "GiB-h"),
            _tags(r),
        ]
        for r in report.recommendations
    ]
    return table(header, rows, headers=headers)


def _cores(value: int | float | None) -> float | None:
    return None if value is None else value / NANOCORES_PER_CORE


def _proposal_record(p: Proposal, replicas: float) -> dict[str, Any]:
    scale = _cores if p.resource is Resource.CPU else (lambda v: v)
    return {
        "current": {"request": scale(p.current_request), "limit": scale(p.current_limit)},
        "proposed": None
        if not p.proposed
        else {"request": scale(p.request), "limit": scale(p.limit)},
        "change": scale(p.request_change),
        "savingPerMonth": p.saving_per_month(replicas),
        "reason": p.reason,
    }


def _record(r: Recommendation) -> dict[str, Any]:
    cpu = _proposal_record(r.cpu, r.usage.replicas)
    cpu["usage"] = {
        "percentile": _cores(r.usage.cpu_quantile_nanocores),
        "max": _cores(r.usage.cpu_max_nanocores),
    }
    memory = _proposal_record(r.memory, r.usage.replicas)
    memory["usage"] = {"max": r.usage.memory_max_bytes}
    return {
        "cluster": r.cluster,
        "namespace": r.namespace,
        "kind": r.kind,
        "name": r.name,
        "container": r.container,
        "pods": r.usage.pods,
        "points": r.usage.points,
        "coverage": r.usage.coverage,
        "replicas": r.usage.replicas,
        "cpu": cpu,
        "memory": memory,
        "throttled": r.throttled,
        "oomKilled": r.oom_killed,
        "notes": list(r.notes),
    }


def recommendations_json(report: Report) -> dict[str, Any]:
    s = report.strategy
    return {
        "status": "success",
        "data": {
            "start": rfc3339(report.start_ms),
            "end": rfc3339(report.end_ms),
            "strategy": {
                "window": format_duration(s.window_ms),
                "cpuPercentile": s.cpu_percentile,
                "memoryBufferPercent": s.memory_buffer_percent,
                "minPoints": s.min_points,
                "throttleRatio": s.throttle_ratio,
                "allowHpa": s.allow_hpa,
            },
            "units": {"cpu": "cores", "memory": "bytes", "saving": "core-hours, GiB-hours"},
            "relativeError": report.relative_error,
            "recommendations": [_record(r) for r in report.recommendations],
        },
    }


CSV_FIELDS = (
    "cluster",
    "namespace",
    "kind",
    "name",
    "container",
    "pods",
    "points",
    "coverage",
    "replicas",
    "cpu_request_current",
    "cpu_limit_current",
    "cpu_request_proposed",
    "cpu_limit_proposed",
    "cpu_saving_core_hours_per_month",
    "cpu_reason",
    "memory_request_current",
    "memory_limit_current",
    "memory_request_proposed",
    "memory_limit_proposed",
    "memory_saving_gib_hours_per_month",
    "memory_reason",
    "throttled",
    "oom_killed",
    "notes",
)


def recommendations_csv(report: Report, *, headers: bool = True) -> str:
    """One line per workload container: CPU in cores, memory in bytes, empty when unset."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if headers:
        writer.writerow(CSV_FIELDS)

    def cell(value: object) -> object:
        return "" if value is None else value

    for r in report.recommendations:
        c, m = _record(r)["cpu"], _record(r)["memory"]
        proposed_c, proposed_m = c["proposed"] or {}, m["proposed"] or {}
        writer.writerow(
            [
                cell(v)
                for v in (
                    r.cluster,
                    r.namespace,
                    r.kind,
                    r.name,
                    r.container,
                    r.usage.pods,
                    r.usage.points,
                    r.usage.coverage,
                    r.usage.replicas,
                    c["current"]["request"],
                    c["current"]["limit"],
                    proposed_c.get("request"),
                    proposed_c.get("limit"),
                    c["savingPerMonth"],
                    c["reason"],
                    m["current"]["request"],
                    m["current"]["limit"],
                    proposed_m.get("request"),
                    proposed_m.get("limit"),
                    m["savingPerMonth"],
                    m["reason"],
                    str(r.throttled).lower(),
                    str(r.oom_killed).lower(),
                    "; ".join(r.notes),
                )
            ]
        )
    return out.getvalue()


# --- patches --------------------------------------------------------------------------------


def _container_patch(r: Recommendation) -> dict[str, Any] | None:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if r.cpu.proposed and r.cpu.request is not None:
        requests["cpu"] = cpu_text(r.cpu.request)
        if r.cpu.current_limit is not None:
            limits["cpu"] = None  # removed: the strategy sets no CPU limit
    if r.memory.proposed and r.memory.request is not None and r.memory.limit is not None:
        requests["memory"] = memory_text(r.memory.request)
        limits["memory"] = memory_text(r.memory.limit)
    if not requests:
        return None
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {"name": r.container, "resources": resources}


def patches(report: Report) -> list[tuple[Recommendation, str, dict[str, Any]]]:
    """A strategic-merge patch per workload with at least one proposal, as (its first
    recommendation, kubectl's resource name, patch), in the report's order. Kinds outside
    ``PATCHABLE`` (bare pods, other controllers) get none."""
    by_workload: dict[tuple[str, str, str, str], list[Recommendation]] = {}
    for r in report.recommendations:
        by_workload.setdefault((r.cluster, r.namespace, r.kind, r.name), []).append(r)
    out = []
    for (_cluster, _ns, kind, _name), found in by_workload.items():
        if kind not in PATCHABLE:
            continue
        containers = [c for c in map(_container_patch, found) if c is not None]
        if not containers:
            continue
        resource, path = PATCHABLE[kind]
        patch: dict[str, Any] = {"containers": containers}
        for part in reversed(path):
            patch = {part: patch}
        out.append((found[0], resource, patch))
    return out


_NO_PATCHES = "# no patches: no workload has a proposal for a kind kubectl can patch\n"


def _command(r: Recommendation, resource: str) -> list[str]:
    return ["kubectl", "patch", resource, r.name, "-n", r.namespace, "--type", "strategic"]


def patches_yaml(found: Sequence[tuple[Recommendation, str, dict[str, Any]]]) -> str:
    """YAML documents, each behind a comment saying how to apply it."""
    docs = []
    for r, resource, patch in found:
        command = shlex.join([*_command(r, resource), "--patch-file", "PATCH.yaml"])
        body = yaml.safe_dump(patch, sort_keys=False, default_flow_style=False)
        docs.append(f"# {r.cluster}: {command}\n{body}")
    return "---\n".join(docs) if docs else _NO_PATCHES


def patches_json_lines(found: Sequence[tuple[Recommendation, str, dict[str, Any]]]) -> str:
    """One ``kubectl patch`` command per workload, its patch as JSON."""
    lines = [
        shlex.join([*_command(r, resource), "-p", json.dumps(patch, separators=(",", ":"))])
        for r, resource, patch in found
    ]
    return "".join(f"{line}\n" for line in lines) if lines else _NO_PATCHES

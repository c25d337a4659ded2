"""The API resources the simulator serves besides metrics, and their discovery documents.

``/api``, ``/api/v1``, ``/apis`` (every group, ``metrics.k8s.io`` included) and
``/apis/<group>/<version>``, shaped as the API server writes them (short names, verbs,
categories), so that kubectl resolves ``deploy``, ``rs``, ``sts``, ``ds``, ``cj`` and ``hpa``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from recorder.simulator import wire

__all__ = [
    "NAMESPACES",
    "NODES",
    "PODS",
    "RESOURCES",
    "ApiResource",
    "find",
    "group",
    "group_list",
    "group_versions",
    "resource_list",
]

_json = msgspec.json.Encoder(order="deterministic")
_VERBS = ["get", "list", "watch"]
_OBJECT_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True, slots=True)
class ApiResource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    fields: tuple[str, ...] = _OBJECT_FIELDS
    """Field selectors the API server supports on this resource, in `listing.Entry` order."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


PODS = ApiResource(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    True,
    ("po",),
    ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
)
NODES = ApiResource("", "v1", "nodes", "node", "Node", False, ("no",), ("metadata.name",))
NAMESPACES = ApiResource(
    "", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), ("metadata.name",)
)
RESOURCES: tuple[ApiResource, ...] = (
    NAMESPACES,
    NODES,
    PODS,
    ApiResource("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",)),
    ApiResource("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",)),
    ApiResource("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, ("sts",)),
    ApiResource("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ("ds",)),
    ApiResource("batch", "v1", "jobs", "job", "Job", True),
    ApiResource("batch", "v1", "cronjobs", "cronjob", "CronJob", True, ("cj",)),
    ApiResource(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        True,
        ("hpa",),
    ),
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


def find(group: str, version: str, plural: str) -> ApiResource | None:
    return _BY_PATH.get((group, version, plural))


def group_versions() -> list[tuple[str, str]]:
    """(group, version) of every named group served here, in order."""
    seen: dict[tuple[str, str], None] = {}
    for r in RESOURCES:
        if r.group:
            seen[(r.group, r.version)] = None
    return list(seen)


def _entry(group: str, versions: Sequence[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def group_list(metrics_versions: Sequence[str]) -> bytes:
    """``GET /apis``: the object groups, then metrics.k8s.io (when served)."""
    groups = [_entry(g, [v]) for g, v in group_versions()]
    if metrics_versions:
        groups.append(_entry(wire.GROUP, metrics_versions))
    return _json.encode({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


def group(name: str) -> bytes | None:
    """``GET /apis/<group>``, or None for a group not served here."""
    versions = [v for g, v in group_versions() if g == name]
    if not versions:
        return None
    return _json.encode({"kind": "APIGroup", "apiVersion": "v1", **_entry(name, versions)})


def resource_list(group_name: str, version: str) -> bytes | None:
    """``GET /api/v1`` or ``/apis/<group>/<version>``, or None."""
    resources = [r for r in RESOURCES if (r.group, r.version) == (group_name, version)]
    if not resources:
        return None
    items = []
    for r in resources:
        item: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": _VERBS,
        }
        if r.short_names:
            item["shortNames"] = list(r.short_names)
        if r.kind not in ("Node", "Namespace"):  # `kubectl get all` lists neither
            item["categories"] = ["all"]
        items.append(item)
    body = {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group_name}/{version}" if group_name else version,
        "resources": items,
    }
    return _json.encode(body)

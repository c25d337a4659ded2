"""The few core API objects ``kubectl top`` reads besides the Metrics API.

``kubectl top node`` lists ``/api/v1/nodes`` for each node's allocatable CPU and memory (the
percent columns); ``kubectl top pod`` lists ``/api/v1/[namespaces/<ns>/]pods`` when the metrics
list is empty, to tell "no pods" from "metrics not ready". Served here: ``/api``, ``/api/v1``,
those lists, single nodes and ``/version``; each object carries only the fields a client of
these paths needs. Allocatable is derived once per node from its first usage, rounded up to a
plausible machine size, so percentages stay stable.
"""

from __future__ import annotations

import math
import threading
from typing import Any
from urllib.parse import parse_qs

import msgspec

from recorder.selectors import SelectorError, parse_label_selector
from recorder.simulator import wire
from recorder.simulator.model import ClusterModel, Frame

__all__ = ["CoreApi"]

_json = msgspec.json.Encoder(order="deterministic")
_VERBS = ["get", "list"]
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+recorder-simulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _api_resource(name: str, singular: str, namespaced: bool, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": _VERBS,
    }


class CoreApi:
    """Renders the core objects from a `ClusterModel` frame."""

    def __init__(self, model: ClusterModel) -> None:
        self._model = model
        self._allocatable: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def handle(self, path: str, query: str, frame: Frame) -> tuple[int, bytes] | None:
        """(status, body) for a core path, or None when the path is not one of ours."""
        parts = [p for p in path.split("/") if p]
        match parts:
            case ["version"]:
                return 200, _json.encode(VERSION)
            case ["api"]:
                body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
                return 200, _json.encode(body)
            case ["api", "v1"]:
                return 200, _json.encode(
                    {
                        "kind": "APIResourceList",
                        "groupVersion": "v1",
                        "resources": [
                            _api_resource("nodes", "node", False, "Node"),
                            _api_resource("pods", "pod", True, "Pod"),
                        ],
                    }
                )
            case ["api", "v1", "nodes"]:
                return self._node_list(frame, query)
            case ["api", "v1", "nodes", name]:
                for node in frame.nodes:
                    if node.name == name:
                        return 200, _json.encode(self._node(frame, node.index))
                return 404, wire.status(
                    404,
                    "NotFound",
                    f'nodes "{name}" not found',
                    wire.StatusDetails(name, "", "nodes"),
                )
            case ["api", "v1", "pods"]:
                return self._pod_list(frame, None, query)
            case ["api", "v1", "namespaces", namespace, "pods"]:
                return self._pod_list(frame, namespace, query)
            case _:
                return None

    def _node_list(self, frame: Frame, query: str) -> tuple[int, bytes]:
        try:
            selector = parse_label_selector(_param(query, "labelSelector"))
        except SelectorError as exc:
            return 400, wire.bad_request(str(exc))
        items = [self._node(frame, n.index) for n in frame.nodes if selector.matches(n.labels)]
        return 200, _json.encode(_list("NodeList", items))

    def _node(self, frame: Frame, index: int) -> dict[str, Any]:
        node = frame.nodes[index]
        with self._lock:
            allocatable = self._allocatable.get(node.name)
            if allocatable is None:
                cpu_nanocores, memory_kib = frame.node_usage[index]
                allocatable = self._allocatable[node.name] = _machine(cpu_nanocores, memory_kib)
        return {
            "metadata": {
                "name": node.name,
                "labels": dict(node.labels),
                "creationTimestamp": wire.rfc3339(self._model.now() - 86_400),
            },
            "status": {
                "capacity": {**allocatable, "pods": "110"},
                "allocatable": {**allocatable, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def _pod_list(self, frame: Frame, namespace: str | None, query: str) -> tuple[int, bytes]:
        try:
            selector = parse_label_selector(_param(query, "labelSelector"))
        except SelectorError as exc:
            return 400, wire.bad_request(str(exc))
        items = []
        for pod in frame.pods:
            if namespace is not None and pod.namespace != namespace:
                continue
            if not selector.matches(pod.labels):
                continue
            items.append(
                {
                    "metadata": {
                        "name": pod.name,
                        "namespace": pod.namespace,
                        "labels": dict(pod.labels),
                        "creationTimestamp": wire.rfc3339(pod.started_at),
                    },
                    "spec": {
                        "nodeName": frame.nodes[pod.node].name,
                        "containers": [{"name": name} for name in pod.container_names],
                    },
                    "status": {"phase": "Running"},
                }
            )
        return 200, _json.encode(_list("PodList", items))


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}


def _param(query: str, name: str) -> str:
    return parse_qs(query, keep_blank_values=True).get(name, [""])[0]


def _machine(cpu_nanocores: int, memory_kib: int) -> dict[str, str]:
    """A machine size with room for twice the usage: 2, 4, 8... cores and 4, 8, 16... GiB."""
    cores = max(2, 2 ** math.ceil(math.log2(max(1.0, 2 * cpu_nanocores / 1e9))))
    gib = max(4, 2 ** math.ceil(math.log2(max(1.0, 2 * memory_kib / 2**20))))
    return {"cpu": str(cores), "memory": f"{gib}Gi"}

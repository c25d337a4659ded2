"""The cluster objects behind the simulated pods: their controllers, HPAs and nodes, as the apps,
batch, autoscaling and core APIs show them.

Drawn once per model from its seed. A workload's controller chain: a Deployment owns a
ReplicaSet ``<name>-<template hash>`` that owns the pods; StatefulSets and DaemonSets own their
pods; a ``batch`` profile (`catalog`) is a Job ``<name>-<template hash>`` (its pods keep their
names), owned by a CronJob ``<name>`` when it is a CronJob's; static control-plane pods are
mirror pods owned by their Node, as the kubelet makes them. Controllers are static (their
status says every replica is ready, while pods churn under them, `pods`), except when
Deployments roll out (`model`): each revision has its own ReplicaSet, template hash, images and
maybe CPU requests (`revision`), and `rollouts` serves them over time.

A few Deployments (about one in four with two or more replicas, outside kube-system, whose
containers all request the resource) have a HorizontalPodAutoscaler on CPU, memory or both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from recorder.simulator import wire
from recorder.simulator.listing import Entry
from recorder.simulator.model import ClusterModel, Frame, PodInstance
from recorder.simulator.resources import (
    ContainerResources,
    cpu_text,
    draw,
    memory_text,
    plan_workload,
    qos_class,
    revised,
)
from recorder.simulator.topology import PodSlot, Workload

__all__ = ["ClusterObjects", "WorkloadObjects", "entry", "machine", "node_ip", "uid"]

_json = msgspec.json.Encoder(order="deterministic")
_PER_POD_LABELS = ("apps.kubernetes.io/pod-index", "statefulset.kubernetes.io/pod-name")
_HASH_LABELS = ("pod-template-hash", "controller-revision-hash", "pod-template-generation")
_NOT_SELECTED = ("version", "env", "app.kubernetes.io/part-of", *_HASH_LABELS)
SYSTEM_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
"""The namespaces every cluster has, served besides the simulated pods' namespaces."""
_REVISION_CACHE = 50_000
STATIC_RESOURCE_VERSION = 10_000
"""Objects that never change carry resource versions near this (far below every event's);
nodes count down from it, controllers up."""


def uid(seed: int, *parts: object) -> str:
    """A version-4-shaped UUID, stable for the seed and the parts."""
    text = "/".join(str(p) for p in (seed, *parts)).encode()
    h = hashlib.blake2b(text, digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def _owner(api_version: str, kind: str, name: str, owner_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _resources(c: ContainerResources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limits = {}
    if c.cpu_limit_millicores is not None:
        limits["cpu"] = cpu_text(c.cpu_limit_millicores)
    if c.memory_limit_mib is not None:
        limits["memory"] = memory_text(c.memory_limit_mib)
    requests = {}
    if c.cpu_request_millicores is not None:
        requests["cpu"] = cpu_text(c.cpu_request_millicores)
    if c.memory_request_mib is not None:
        requests["memory"] = memory_text(c.memory_request_mib)
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def entry(item: dict[str, Any], resource_version: int) -> Entry:
    """A namespaced object's list entry, its ``resourceVersion`` set."""
    metadata = item["metadata"]
    metadata["resourceVersion"] = str(resource_version)
    ns, name = metadata["namespace"], metadata["name"]
    return Entry(
        f"{ns}/{name}",
        ns,
        name,
        metadata.get("labels", {}),
        (name, ns),
        _json.encode(item).decode(),
    )


def _containers(
    w: Workload, resources: Sequence[ContainerResources], revision: int
) -> list[dict[str, Any]]:
    return [
        {"name": c.name, "image": image(w, c.name, revision), "resources": _resources(c)}
        for c in resources
    ]


def image(workload: Workload, container: str, revision: int = 0) -> str:
    """The image of ``container``; each rollout (``revision``) moves its minor version on."""
    minor = len(workload.name) % 7 + revision
    return f"registry.example.com/{workload.namespace}/{container}:1.{minor}"


@dataclass(frozen=True, slots=True)
class WorkloadObjects:
    """What every pod of one workload shares, and the objects above them."""

    workload: Workload
    controller: str
    """Deployment, StatefulSet, DaemonSet, Job, CronJob or Static."""
    resources: tuple[ContainerResources, ...]
    qos_class: str
    created: float
    uid: str
    owner: dict[str, Any] | None
    """The pods' controller reference (None for mirror pods: their Node, set per pod)."""
    template_labels: Mapping[str, str]
    containers: list[dict[str, Any]]
    restart_policy: str
    template_hash: str
    """The ``pod-template-hash`` of this revision (a Deployment's ReplicaSet is named by it)."""
    revision: int = 0
    """A Deployment's rollouts before this template (`ClusterModel.revision`)."""

    @property
    def object_labels(self) -> dict[str, str]:
        return {k: v for k, v in self.template_labels.items() if k not in _HASH_LABELS}

    @property
    def selector(self) -> dict[str, str]:
        return {k: v for k, v in self.template_labels.items() if k not in _NOT_SELECTED}


class ClusterObjects:
    """Every object above the pods, drawn once from the model."""

    def __init__(self, model: ClusterModel) -> None:
        self.model = model
        self.seed = seed = model.config.seed
        self.birth = math.floor(model.started_at / 3600) * 3600 - 30 * 86_400
        """When the cluster (its nodes) was created: 30 days before the model's start."""
        by_workload: dict[tuple[str, str], list[PodSlot]] = {}
        for slot in model.slots:
            by_workload.setdefault((slot.workload.namespace, slot.workload.name), []).append(slot)
        self.workloads: list[WorkloadObjects] = []
        self.of_slot: list[WorkloadObjects] = [None] * len(model.slots)  # type: ignore[list-item]
        for slots in by_workload.values():
            objects = self._workload(slots)
            self.workloads.append(objects)
            for slot in slots:
                self.of_slot[slot.number] = objects
        self._node_uids = [uid(seed, "node", n.name) for n in model.nodes]
        self._revisions: dict[tuple[str, int], WorkloadObjects] = {}
        self._nodes: list[Entry] | None = None

    def _workload(self, slots: Sequence[PodSlot]) -> WorkloadObjects:
        w = slots[0].workload
        seed = self.seed
        controller = w.batch or w.kind
        resources = plan_workload(seed, w, slots)
        labels = {k: v for k, v in slots[0].labels.items() if k not in _PER_POD_LABELS}
        created = self.birth + 86_400 * 25 * draw(seed, "created", w.namespace, w.name)
        top_uid = uid(seed, controller, w.namespace, w.name)
        owner = None
        if controller == "Deployment":
            rs = f"{w.name}-{w.template_hash}"
            owner = _owner("apps/v1", "ReplicaSet", rs, uid(seed, "ReplicaSet", w.namespace, rs))
        elif controller in ("Job", "CronJob"):
            job = f"{w.name}-{w.template_hash}"
            owner = _owner("batch/v1", "Job", job, uid(seed, "Job", w.namespace, job))
        elif controller != "Static":
            owner = _owner("apps/v1", controller, w.name, top_uid)
        return WorkloadObjects(
            workload=w,
            controller=controller,
            resources=resources,
            qos_class=qos_class(resources),
            created=created,
            uid=top_uid,
            owner=owner,
            template_labels=labels,
            containers=_containers(w, resources, 0),
            restart_policy="Never" if controller in ("Job", "CronJob") else "Always",
            template_hash=w.template_hash,
        )

    def revision(self, w: WorkloadObjects, revision: int) -> WorkloadObjects:
        """A Deployment's ``w`` after ``revision`` rollouts: a new template hash and ReplicaSet,
        the images' next version, and on about half of them a CPU request a fifth lower where
        the request is generous (`resources.revised`)."""
        if not revision:
            return w
        key = (w.uid, revision)
        found = self._revisions.get(key)
        if found is None:
            if len(self._revisions) > _REVISION_CACHE:
                self._revisions.clear()
            wl = w.workload
            h = self.model.template_hash(wl, revision)
            rs = f"{wl.name}-{h}"
            resources = revised(self.seed, wl, w.resources, revision)
            found = self._revisions[key] = replace(
                w,
                resources=resources,
                qos_class=qos_class(resources),
                owner=_owner(
                    "apps/v1", "ReplicaSet", rs, uid(self.seed, "ReplicaSet", wl.namespace, rs)
                ),
                template_labels={**w.template_labels, "pod-template-hash": h},
                containers=_containers(wl, resources, revision),
                template_hash=h,
                revision=revision,
            )
        return found

    def of_pod(self, pod: PodInstance) -> WorkloadObjects:
        """The workload objects (of its revision) that ``pod`` was made from."""
        w = self.of_slot[pod.slot.number]
        return self.revision(w, pod.revision) if pod.revision else w

    def node_owner(self, node: int) -> dict[str, Any]:
        name = self.model.nodes[node].name
        return _owner("v1", "Node", name, self._node_uids[node])

    # --- static objects, as list entries ---------------------------------------------------

    def entries(self, plural: str, frame: Frame) -> list[Entry]:
        """Every object of ``plural`` (not pods), sorted by key. ``frame`` sizes new nodes."""
        if plural == "nodes":
            if self._nodes is None:
                self._nodes = self._node_entries(frame)
            return self._nodes
        if plural == "namespaces":
            return self._namespace_entries()
        out = [
            entry(item, STATIC_RESOURCE_VERSION + number)
            for number, w in enumerate(self.workloads)
            for item in self._objects_of(plural, w)
        ]
        out.sort()
        return out

    def _meta(
        self, name: str, w: WorkloadObjects, kind: str, owner: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": w.workload.namespace,
            "uid": uid(self.seed, kind, w.workload.namespace, name),
            "generation": 1,
            "creationTimestamp": wire.rfc3339(w.created),
            "labels": w.object_labels,
        }
        if owner is not None:
            meta["ownerReferences"] = [owner]
        return meta

    def _template(self, w: WorkloadObjects, labels: Mapping[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": w.containers, "restartPolicy": w.restart_policy},
        }

    def deployment(self, w: WorkloadObjects, revision: int) -> dict[str, Any]:
        """The Deployment ``w`` after ``revision`` rollouts, each pod of it updated (the
        simulator does not show a rollout in progress)."""
        wl, t = w.workload, self.revision(w, revision)
        replicas, generation = wl.replicas, revision + 1
        meta = self._meta(wl.name, w, "Deployment")
        meta["generation"] = generation
        meta["annotations"] = {"deployment.kubernetes.io/revision": str(generation)}
        labels = {k: v for k, v in t.template_labels.items() if k not in _HASH_LABELS}
        return {
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": w.selector},
                "template": self._template(t, labels),
                "strategy": {"type": "RollingUpdate"},
            },
            "status": {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "updatedReplicas": replicas,
                "observedGeneration": generation,
            },
        }

    def replicaset(self, w: WorkloadObjects, revision: int, *, current: bool) -> dict[str, Any]:
        """The ReplicaSet of Deployment ``w``'s ``revision``: all its replicas while it is the
        ``current`` one, none after (kept, as ``revisionHistoryLimit`` keeps old ones)."""
        wl, t = w.workload, self.revision(w, revision)
        assert t.owner is not None
        deployment = _owner("apps/v1", "Deployment", wl.name, w.uid)
        meta = self._meta(t.owner["name"], w, "ReplicaSet", deployment)
        meta["labels"] = {**w.object_labels, "pod-template-hash": t.template_hash}
        meta["annotations"] = {"deployment.kubernetes.io/revision": str(revision + 1)}
        if revision:  # made as the rollout began, before its first pod (`model`: start-up)
            instant = self.model.rollout_instant(wl, revision)
            meta["creationTimestamp"] = wire.rfc3339(
                instant - 3 * self.model.config.resolution_seconds
            )
        if not current:
            meta["generation"] = 2
        replicas = wl.replicas if current else 0
        return {
            "metadata": meta,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {**w.selector, "pod-template-hash": t.template_hash}},
                "template": self._template(t, t.template_labels),
            },
            "status": {
                "replicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "observedGeneration": meta["generation"],
            },
        }

    def _objects_of(self, plural: str, w: WorkloadObjects) -> list[dict[str, Any]]:
        wl = w.workload
        replicas = wl.replicas
        template_labels = {k: v for k, v in w.template_labels.items() if k not in _HASH_LABELS}
        ready = {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}
        match plural, w.controller:
            case "deployments", "Deployment":
                return [self.deployment(w, 0)]
            case "replicasets", "Deployment":
                return [self.replicaset(w, 0, current=True)]
            case "statefulsets", "StatefulSet":
                return [
                    {
                        "metadata": self._meta(wl.name, w, "StatefulSet"),
                        "spec": {
                            "replicas": replicas,
                            "serviceName": wl.name,
                            "selector": {"matchLabels": w.selector},
                            "template": self._template(w, template_labels),
                        },
                        "status": {**ready, "currentReplicas": replicas},
                    }
                ]
            case "daemonsets", "DaemonSet":
                return [
                    {
                        "metadata": self._meta(wl.name, w, "DaemonSet"),
                        "spec": {
                            "selector": {"matchLabels": w.selector},
                            "template": self._template(w, template_labels),
                        },
                        "status": {
                            "currentNumberScheduled": replicas,
                            "desiredNumberScheduled": replicas,
                            "numberReady": replicas,
                            "numberAvailable": replicas,
                            "updatedNumberScheduled": replicas,
                            "numberMisscheduled": 0,
                            "observedGeneration": 1,
                        },
                    }
                ]
            case "jobs", "Job" | "CronJob":
                assert w.owner is not None
                cronjob = None
                if w.controller == "CronJob":
                    cronjob = _owner("batch/v1", "CronJob", wl.name, w.uid)
                meta = self._meta(w.owner["name"], w, "Job", cronjob)
                return [
                    {
                        "metadata": meta,
                        "spec": {
                            "parallelism": replicas,
                            "completions": None,
                            "backoffLimit": 6,
                            "manualSelector": True,
                            "selector": {"matchLabels": w.selector},
                            "template": self._template(w, w.template_labels),
                        },
                        "status": {
                            "active": replicas,
                            "ready": replicas,
                            "startTime": wire.rfc3339(w.created),
                        },
                    }
                ]
            case "cronjobs", "CronJob":
                assert w.owner is not None
                job = w.owner
                minute = int(draw(self.seed, "schedule", wl.namespace, wl.name) * 60)
                return [
                    {
                        "metadata": self._meta(wl.name, w, "CronJob"),
                        "spec": {
                            "schedule": f"{minute} */6 * * *",
                            "concurrencyPolicy": "Allow",
                            "suspend": False,
                            "jobTemplate": {
                                "spec": {
                                    "parallelism": replicas,
                                    "template": self._template(w, w.template_labels),
                                }
                            },
                        },
                        "status": {
                            "active": [
                                {
                                    "apiVersion": "batch/v1",
                                    "kind": "Job",
                                    "name": job["name"],
                                    "namespace": wl.namespace,
                                    "uid": job["uid"],
                                }
                            ],
                            "lastScheduleTime": wire.rfc3339(w.created),
                        },
                    }
                ]
            case "horizontalpodautoscalers", "Deployment":
                hpa = self._hpa(w)
                return [] if hpa is None else [hpa]
            case _:
                return []

    def hpa_metrics(self, w: WorkloadObjects) -> tuple[str, ...]:
        """The resources an HPA scales ``w`` on (empty: no HPA)."""
        wl = w.workload
        if w.controller != "Deployment" or wl.replicas < 2 or wl.namespace == "kube-system":
            return ()
        if draw(self.seed, "hpa", wl.namespace, wl.name) >= 0.25:
            return ()
        which = draw(self.seed, "hpa-metrics", wl.namespace, wl.name)
        wanted = ("cpu",) if which < 0.5 else ("cpu", "memory") if which < 0.85 else ("memory",)
        requested = {
            "cpu": all(c.cpu_request_millicores is not None for c in w.resources),
            "memory": all(c.memory_request_mib is not None for c in w.resources),
        }
        return tuple(r for r in wanted if requested[r])

    def _hpa(self, w: WorkloadObjects) -> dict[str, Any] | None:
        metrics = self.hpa_metrics(w)
        if not metrics:
            return None
        wl = w.workload
        targets = {"cpu": 70, "memory": 80}
        return {
            "metadata": self._meta(wl.name, w, "HorizontalPodAutoscaler"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": wl.name},
                "minReplicas": max(1, wl.replicas // 2),
                "maxReplicas": wl.replicas * 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": name,
                            "target": {"type": "Utilization", "averageUtilization": targets[name]},
                        },
                    }
                    for name in metrics
                ],
            },
            "status": {"currentReplicas": wl.replicas, "desiredReplicas": wl.replicas},
        }

    def namespace_uid(self, name: str) -> str:
        """A namespace's UID: stable for the seed, so ``kube-system``'s identifies the
        simulated cluster (two seeds, two clusters)."""
        return uid(self.seed, "Namespace", name)

    def _namespace_entries(self) -> list[Entry]:
        names = sorted({*SYSTEM_NAMESPACES, *self.model.config.namespace_names})
        out = []
        for number, name in enumerate(names):
            labels = {"kubernetes.io/metadata.name": name}
            item = {
                "metadata": {
                    "name": name,
                    "uid": self.namespace_uid(name),
                    "resourceVersion": str(STATIC_RESOURCE_VERSION // 100 + number),
                    "creationTimestamp": wire.rfc3339(self.birth),
                    "labels": labels,
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            out.append(Entry(name, "", name, labels, (name,), _json.encode(item).decode()))
        return out

    def _node_entries(self, frame: Frame) -> list[Entry]:
        out = []
        for node in frame.nodes:
            cpu_nanocores, memory_kib = frame.node_usage[node.index]
            allocatable = machine(cpu_nanocores, memory_kib)
            gib = int(allocatable["memory"].removesuffix("Gi"))
            capacity = {**allocatable, "memory": f"{gib * 1024 + 512}Mi", "pods": "110"}
            labels = dict(node.labels)
            arch = labels.get("kubernetes.io/arch", "amd64")
            spec: dict[str, Any] = {}
            if node.control_plane:
                spec["taints"] = [
                    {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
                ]
            item = {
                "metadata": {
                    "name": node.name,
                    "uid": self._node_uids[node.index],
                    "resourceVersion": str(STATIC_RESOURCE_VERSION - 1 - node.index),
                    "creationTimestamp": wire.rfc3339(self.birth),
                    "labels": labels,
                },
                "spec": spec,
                "status": {
                    "capacity": capacity,
                    "allocatable": {**allocatable, "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [
                        {"type": "InternalIP", "address": node_ip(node.index)},
                        {"type": "Hostname", "address": node.name},
                    ],
                    "nodeInfo": {
                        "architecture": arch,
                        "operatingSystem": "linux",
                        "kubeletVersion": "v1.32.0",
                        "containerRuntimeVersion": "containerd://1.7.24",
                    },
                },
            }
            out.append(
                Entry(
                    node.name, "", node.name, node.labels, (node.name,), _json.encode(item).decode()
                )
            )
        out.sort()
        return out


def node_ip(index: int) -> str:
    return f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256 + 1}"


def machine(cpu_nanocores: int, memory_kib: int) -> dict[str, str]:
    """A machine size with room for twice the usage: 2, 4, 8... cores and 4, 8, 16... GiB."""
    cores = max(2, 2 ** math.ceil(math.log2(max(1.0, 2 * cpu_nanocores / 1e9))))
    gib = max(4, 2 ** math.ceil(math.log2(max(1.0, 2 * memory_kib / 2**20))))
    return {"cpu": str(cores), "memory": f"{gib}Gi"}

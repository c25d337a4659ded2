"""Draws the static part of a simulated cluster (nodes, workloads, pod slots) from a seed.

Everything here is computed once per `ClusterModel`; what changes over time (which pod occupies
a slot, usage values) is computed in `model.py`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import NamedTuple

from recorder.simulator.catalog import (
    AKS_POOLS,
    APP_WORKLOADS,
    CONTROL_PLANE,
    DAEMONSETS,
    EC2_INSTANCE_TYPES,
    EC2_REGIONS,
    GKE_MACHINE_TYPES,
    GKE_POOLS,
    INFRASTRUCTURE_NAMESPACES,
    NODE_STYLES,
    SAFE_ALPHABET,
    SYSTEM_DEPLOYMENTS,
    SYSTEM_NAMESPACE,
    BatchController,
    WorkloadKind,
    WorkloadProfile,
    encode_safe,
)

MIB_PAGES = 256
"""4 KiB memory pages per MiB: working sets are whole pages, as the kernel counts them."""

SUFFIX_SPACE = len(SAFE_ALPHABET) ** 5
"""How many distinct 5-character generated-name suffixes exist."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node: its name, labels, the kubelet's metrics window and its own system overhead."""

    index: int
    name: str
    labels: Mapping[str, str]
    window_ms: int
    control_plane: bool
    overhead_cpu_nanocores: float
    overhead_memory_pages: float


@dataclass(frozen=True, slots=True)
class Workload:
    """A controller (or a static pod) owning one or more pod slots."""

    namespace: str
    name: str
    kind: WorkloadKind
    replicas: int
    template_hash: str
    daily_amplitude: float
    phase: int
    container_names: tuple[str, ...]
    suffix_multiplier: int
    suffix_offset: int
    batch: BatchController = ""
    """Shown by the core API as a Job (a CronJob's when ``CronJob``); see `catalog`."""


ContainerParams = tuple[int, float, float, float, int, int]
"""(noise index, CPU base nanocores, memory base pages, daily amplitude, phase, flags)."""


class PodSlot(NamedTuple):
    """A place for one pod of a workload; its occupant is replaced over time (churn).

    A NamedTuple because a large cluster has 150,000 of them. ``lifetime_seconds`` 0 means the
    occupant is never replaced. The pod name is ``fixed_name`` when set (StatefulSet and static
    pods), else ``name_prefix`` plus a generated suffix.
    """

    number: int
    workload: Workload
    replica: int
    pinned_node: int | None
    labels: Mapping[str, str]
    lifetime_seconds: float
    offset_seconds: float
    containers: tuple[ContainerParams, ...]
    fixed_name: str
    name_prefix: str
    may_stay_pending: bool


@dataclass(frozen=True, slots=True)
class Topology:
    nodes: tuple[NodeSpec, ...]
    slots: tuple[PodSlot, ...]
    worker_nodes: tuple[int, ...]
    container_count: int


def _freeze(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted(labels.items())))


def _unique(taken: set[str], draw: Callable[[], str]) -> str:
    name = draw()
    while name in taken:
        name = draw()
    taken.add(name)
    return name


def _ec2_name(rng: random.Random, domain: str) -> str:
    return f"ip-10-{rng.randrange(256)}-{rng.randrange(256)}-{rng.randrange(1, 255)}.{domain}"


def _gke_name(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(4))


def build_nodes(count: int, seed: int) -> tuple[NodeSpec, ...]:
    rng = random.Random(f"nodes/{seed}")
    taken: set[str] = set()  # drawn names; the counted styles are unique by construction
    nodes: list[NodeSpec] = []
    gke_cluster = rng.choice(("prod", "cluster-3", "main", "platform"))
    aks_id = rng.randrange(10_000_000, 99_999_999)
    per_style = [0] * len(NODE_STYLES)
    for index in range(count):
        style = NODE_STYLES[index * len(NODE_STYLES) // count]
        k = per_style[NODE_STYLES.index(style)]
        per_style[NODE_STYLES.index(style)] += 1
        arch = "amd64"
        labels: dict[str, str] = {}
        control_plane = False
        if style == "plain":
            name = f"node-{k + 1}"
            if k == 0:
                control_plane = True
                labels["node-role.kubernetes.io/control-plane"] = ""
                labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        elif style == "ec2":
            region = EC2_REGIONS[k % len(EC2_REGIONS)]
            domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
            name = _unique(taken, partial(_ec2_name, rng, domain))
            instance_type, arch = EC2_INSTANCE_TYPES[k // 7 % len(EC2_INSTANCE_TYPES)]
            zone = f"{region}{'abc'[k % 3]}"
            labels |= {
                "node.kubernetes.io/instance-type": instance_type,
                "topology.kubernetes.io/region": region,
                "topology.kubernetes.io/zone": zone,
                "eks.amazonaws.com/nodegroup": f"ng-{instance_type.split('.')[0]}",
                "eks.amazonaws.com/capacityType": "SPOT" if k % 5 == 4 else "ON_DEMAND",
            }
        elif style == "gke":
            pool = GKE_POOLS[k // 11 % len(GKE_POOLS)]
            machine, arch = GKE_MACHINE_TYPES[GKE_POOLS.index(pool)]
            zone = f"europe-west1-{'bcd'[k % 3]}"
            group = f"{random.Random(f'{seed}/{pool}/{zone}').getrandbits(32):08x}"
            name = _unique(taken, partial(_gke_name, rng, f"gke-{gke_cluster}-{pool}-{group}-"))
            labels |= {
                "cloud.google.com/gke-nodepool": pool,
                "cloud.google.com/machine-family": machine.split("-")[0],
                "node.kubernetes.io/instance-type": machine,
                "topology.kubernetes.io/region": "europe-west1",
                "topology.kubernetes.io/zone": zone,
            }
        else:
            pool = AKS_POOLS[k % len(AKS_POOLS)]
            vmss = encode_base36(k // len(AKS_POOLS), 6)
            name = f"aks-{pool}-{aks_id}-vmss{vmss}"
            labels |= {
                "agentpool": pool,
                "kubernetes.azure.com/agentpool": pool,
                "kubernetes.azure.com/mode": "system" if pool == "nodepool1" else "user",
                "node.kubernetes.io/instance-type": "Standard_D4s_v5",
                "topology.kubernetes.io/region": "westeurope",
                "topology.kubernetes.io/zone": f"westeurope-{k % 3 + 1}",
            }
        labels |= {
            "beta.kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
        }
        roll = rng.random()
        if roll < 0.45:
            window_ms = 30_000
        elif roll < 0.8:
            window_ms = 15_000
        else:
            window_ms = rng.randrange(10_000, 21_000)
        nodes.append(
            NodeSpec(
                index=index,
                name=name,
                labels=_freeze(labels),
                window_ms=window_ms,
                control_plane=control_plane,
                overhead_cpu_nanocores=rng.uniform(60e6, 250e6) * (2.0 if control_plane else 1.0),
                overhead_memory_pages=rng.uniform(350, 1200) * MIB_PAGES,
            )
        )
    return tuple(nodes)


def encode_base36(value: int, length: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(length):
        value, digit = divmod(value, 36)
        out.append(digits[digit])
    return "".join(reversed(out))


class _SlotBuilder:
    """Accumulates workloads and their pod slots."""

    def __init__(self, seed: int, churn_per_hour: float, rng: random.Random) -> None:
        self.seed = seed
        self.rng = rng
        self.mean_lifetime = 3600.0 / churn_per_hour if churn_per_hour > 0 else 0.0
        self.slots: list[PodSlot] = []
        self.container_count = 0
        self.names: dict[str, set[str]] = {}
        self.counters: dict[tuple[str, str], int] = {}

    def name_in(self, namespace: str, base: str) -> str:
        taken = self.names.setdefault(namespace, set())
        name = base
        while name in taken:
            n = self.counters.get((namespace, base), 1) + 1
            self.counters[(namespace, base)] = n
            name = f"{base}-{n}"
        taken.add(name)
        return name

    def add(
        self,
        profile: WorkloadProfile,
        namespace: str,
        replicas: int,
        *,
        name: str | None = None,
        pinned: Sequence[int] | None = None,
        lifetime_factor: float = 1.0,
    ) -> None:
        rng = self.rng
        name = name or self.name_in(namespace, profile.base_name)
        template_hash = encode_safe(rng.getrandbits(48), rng.choice((8, 9, 10, 10, 10)))
        workload = Workload(
            namespace=namespace,
            name=name,
            kind=profile.kind,
            replicas=replicas,
            template_hash=template_hash,
            daily_amplitude=profile.daily_amplitude,
            phase=rng.randrange(8),
            container_names=tuple(c.name for c in profile.containers),
            # Any multiplier not divisible by 3 is invertible modulo 27**5.
            suffix_multiplier=rng.randrange(1, SUFFIX_SPACE // 3) * 3 + 1,
            suffix_offset=rng.randrange(SUFFIX_SPACE),
            batch=profile.batch,
        )
        base_labels = self._labels(profile, workload)
        scale = rng.lognormvariate(0.0, 0.35)
        kind = profile.kind
        if kind == "Deployment":
            prefix = f"{name}-{template_hash}-"
        elif kind == "DaemonSet":
            prefix = f"{name}-"
        else:
            prefix = ""
        may_stay_pending = kind in ("Deployment", "StatefulSet") and namespace != SYSTEM_NAMESPACE
        uniform = rng.uniform
        for replica in range(replicas):
            labels = base_labels
            fixed_name = name if kind == "Static" else ""
            if kind == "StatefulSet":
                fixed_name = f"{name}-{replica}"
                labels = _freeze(
                    {
                        **base_labels,
                        "apps.kubernetes.io/pod-index": str(replica),
                        "statefulset.kubernetes.io/pod-name": fixed_name,
                    }
                )
            lifetime = 0.0
            if self.mean_lifetime and kind != "Static":
                lifetime = self.mean_lifetime * lifetime_factor * uniform(0.5, 1.5)
            containers = []
            for container in profile.containers:
                jitter = uniform(0.85, 1.15)
                containers.append(
                    (
                        2 * self.container_count,
                        container.cpu_millicores * 1e6 * scale * jitter,
                        container.memory_mib * MIB_PAGES * scale**0.5 * jitter,
                        profile.daily_amplitude,
                        workload.phase,
                        container.flags,
                    )
                )
                self.container_count += 1
            self.slots.append(
                PodSlot(
                    len(self.slots),
                    workload,
                    replica,
                    pinned[replica] if pinned is not None else None,
                    labels,
                    lifetime,
                    uniform(0.0, lifetime),
                    tuple(containers),
                    fixed_name,
                    prefix,
                    may_stay_pending,
                )
            )

    def _labels(self, profile: WorkloadProfile, workload: Workload) -> Mapping[str, str]:
        rng = self.rng
        labels = dict(profile.labels)
        if profile.kind == "Static":
            return _freeze(labels)
        if profile.kind == "DaemonSet":
            labels["controller-revision-hash"] = encode_safe(rng.getrandbits(40), 9)
            labels["pod-template-generation"] = str(rng.randrange(1, 4))
            return _freeze(labels)
        if profile.kind == "StatefulSet":
            labels["controller-revision-hash"] = f"{workload.name}-{workload.template_hash}"
        else:
            labels["pod-template-hash"] = workload.template_hash
        if profile.labels:
            return _freeze(labels)
        labels["app.kubernetes.io/name"] = profile.base_name
        if rng.random() < 0.7:
            labels["app.kubernetes.io/instance"] = workload.name
        if rng.random() < 0.5:
            labels["app"] = workload.name
        if profile.tier and rng.random() < 0.6:
            labels["tier"] = profile.tier
        if rng.random() < 0.2:
            labels["env"] = ""
        if rng.random() < 0.3:
            labels["version"] = f"v{rng.randrange(1, 4)}.{rng.randrange(13)}.{rng.randrange(10)}"
        if rng.random() < 0.3:
            labels["app.kubernetes.io/part-of"] = workload.namespace
        return _freeze(labels)


def build_topology(
    *,
    nodes: int,
    pods: int,
    seed: int,
    namespaces: Sequence[str],
    churn_per_hour: float,
) -> Topology:
    """Lay out ``pods`` slots over ``nodes`` nodes in ``namespaces``."""
    node_specs = build_nodes(nodes, seed)
    workers = tuple(n.index for n in node_specs if not n.control_plane) or (0,)
    builder = _SlotBuilder(seed, churn_per_hour, random.Random(f"workloads/{seed}"))
    rng = builder.rng

    general = [ns for ns in namespaces if ns not in INFRASTRUCTURE_NAMESPACES] or list(namespaces)

    def home(hint: str) -> str:
        if hint in namespaces:
            return hint
        if hint == SYSTEM_NAMESPACE:
            return namespaces[0]
        return rng.choice(general)

    remaining = pods
    # One pod per node for each DaemonSet, while they stay a minority of all pods.
    for profile in DAEMONSETS:
        if remaining - nodes < pods * 3 // 4:
            break
        builder.add(
            profile, home(profile.namespace_hint), nodes, pinned=range(nodes), lifetime_factor=4
        )
        remaining -= nodes
    control = next((n for n in node_specs if n.control_plane), None)
    if control is not None and pods >= 20:
        for profile in CONTROL_PLANE:
            namespace = home(profile.namespace_hint)
            name = builder.name_in(namespace, f"{profile.base_name}-{control.name}")
            builder.add(profile, namespace, 1, name=name, pinned=(control.index,))
            remaining -= 1
    if pods >= 10:
        for profile, replicas in SYSTEM_DEPLOYMENTS:
            builder.add(profile, home(profile.namespace_hint), replicas)
            remaining -= replicas
    big = pods > 2000
    while remaining > 0:
        profile = rng.choice(APP_WORKLOADS)
        replicas = rng.choice((1, 1, 2, 2, 3, 3, 4, 6, 10))
        if profile.kind == "StatefulSet":
            replicas = min(replicas, 3)
        elif big:
            replicas *= rng.choice((1, 1, 2, 5, 10))
        replicas = min(replicas, remaining, max(2, pods // 10))
        builder.add(profile, home(profile.namespace_hint), replicas)
        remaining -= replicas
    return Topology(
        nodes=node_specs,
        slots=tuple(builder.slots),
        worker_nodes=workers,
        container_count=builder.container_count,
    )

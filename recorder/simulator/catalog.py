"""The simulator's vocabulary: namespaces, workload profiles and node naming styles.

Only static tables and small helpers live here; `topology.py` draws a concrete cluster from them.
Resource figures are typical steady-state usage (CPU in millicores, memory in MiB) of the
software the names suggest, so a simulated `kubectl top` looks plausible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet", "Static"]
"""How the pods are named and labelled (what the Metrics API shows)."""

BatchController = Literal["", "Job", "CronJob"]
"""For a ``Deployment``-shaped profile: shown by the core API as a Job (owned by a CronJob for
``CronJob``). Its pods keep their names and labels, so the Metrics API is unchanged."""

# Container behaviour flags (bit set).
IDLE = 1
"""Often reports exactly 0 CPU (sleeping sidecars, reloaders)."""
BURST = 2
"""Now and then several times its usual CPU, which can exceed one core."""
LEAK = 4
"""Memory creeps up with the pod's age."""

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The 27 characters Kubernetes uses for generated name suffixes and template hashes."""

SYSTEM_NAMESPACE = "kube-system"

DEFAULT_NAMESPACES = (
    "default",
    SYSTEM_NAMESPACE,
    "monitoring",
    "shop",
    "payments",
    "ingress-nginx",
    "cert-manager",
    "logging",
    "data",
    "ci",
    "search",
    "batch",
)

INFRASTRUCTURE_NAMESPACES = frozenset(
    {SYSTEM_NAMESPACE, "monitoring", "logging", "ingress-nginx", "cert-manager"}
)
"""Namespaces that only get the workloads meant for them, never a random application."""


@dataclass(frozen=True, slots=True)
class ContainerProfile:
    name: str
    cpu_millicores: float
    memory_mib: float
    flags: int = 0


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """A kind of workload: what it runs, where it prefers to live and how it breathes."""

    base_name: str
    kind: WorkloadKind
    namespace_hint: str
    tier: str
    daily_amplitude: float
    containers: tuple[ContainerProfile, ...]
    labels: tuple[tuple[str, str], ...] = ()
    batch: BatchController = ""


def _c(name: str, cpu_millicores: float, memory_mib: float, flags: int = 0) -> ContainerProfile:
    return ContainerProfile(name, cpu_millicores, memory_mib, flags)


APP_WORKLOADS: tuple[WorkloadProfile, ...] = (
    WorkloadProfile(
        "frontend",
        "Deployment",
        "shop",
        "frontend",
        0.6,
        (_c("nginx", 15, 30, BURST), _c("app", 120, 180)),
    ),
    WorkloadProfile(
        "checkout",
        "Deployment",
        "shop",
        "backend",
        0.5,
        (_c("checkout", 80, 140, BURST), _c("istio-proxy", 12, 60)),
        (("security.istio.io/tlsMode", "istio"),),
    ),
    WorkloadProfile("cart", "Deployment", "shop", "backend", 0.5, (_c("cart", 40, 90),)),
    WorkloadProfile(
        "catalog", "Deployment", "shop", "backend", 0.4, (_c("catalog", 60, 250, LEAK),)
    ),
    WorkloadProfile(
        "payments-api",
        "Deployment",
        "payments",
        "backend",
        0.5,
        (_c("api", 90, 200, BURST), _c("vault-agent", 2, 25, IDLE)),
    ),
    WorkloadProfile(
        "ledger-db",
        "StatefulSet",
        "payments",
        "data",
        0.2,
        (_c("postgres", 350, 1200), _c("postgres-exporter", 5, 20, IDLE)),
    ),
    WorkloadProfile("redis", "StatefulSet", "shop", "cache", 0.3, (_c("redis", 30, 300),)),
    WorkloadProfile(
        "worker", "Deployment", "batch", "batch", 0.1, (_c("worker", 900, 700, BURST),)
    ),
    WorkloadProfile(
        "elasticsearch",
        "StatefulSet",
        "search",
        "data",
        0.2,
        (_c("elasticsearch", 600, 2600, BURST),),
    ),
    WorkloadProfile("kafka", "StatefulSet", "data", "data", 0.2, (_c("kafka", 400, 1800),)),
    WorkloadProfile(
        "notifications", "Deployment", "default", "backend", 0.4, (_c("notifier", 10, 64, IDLE),)
    ),
    WorkloadProfile(
        "prometheus",
        "StatefulSet",
        "monitoring",
        "monitoring",
        0.1,
        (_c("prometheus", 250, 2000, LEAK), _c("config-reloader", 1, 15, IDLE)),
    ),
    WorkloadProfile(
        "grafana", "Deployment", "monitoring", "monitoring", 0.3, (_c("grafana", 20, 120),)
    ),
    WorkloadProfile(
        "kube-state-metrics",
        "Deployment",
        "monitoring",
        "monitoring",
        0.1,
        (_c("kube-state-metrics", 10, 80),),
    ),
    WorkloadProfile(
        "ingress-nginx-controller",
        "Deployment",
        "ingress-nginx",
        "frontend",
        0.6,
        (_c("controller", 60, 180, BURST),),
    ),
    WorkloadProfile(
        "cert-manager",
        "Deployment",
        "cert-manager",
        "",
        0.05,
        (_c("cert-manager-controller", 5, 60),),
    ),
    WorkloadProfile(
        "cert-manager-webhook",
        "Deployment",
        "cert-manager",
        "",
        0.05,
        (_c("cert-manager-webhook", 2, 20, IDLE),),
    ),
    WorkloadProfile(
        "report-builder",
        "Deployment",
        "batch",
        "batch",
        0.2,
        (_c("builder", 1500, 900, BURST),),
        batch="CronJob",
    ),
    WorkloadProfile(
        "ci-runner",
        "Deployment",
        "ci",
        "batch",
        0.4,
        (
            _c("runner", 200, 400, BURST | IDLE),
            _c("dind", 300, 600, BURST),
            _c("sidecar", 1, 10, IDLE),
        ),
        batch="Job",
    ),
    WorkloadProfile(
        "log-shipper", "Deployment", "logging", "", 0.3, (_c("vector", 70, 160, BURST),)
    ),
)

DAEMONSETS: tuple[WorkloadProfile, ...] = (
    WorkloadProfile(
        "kube-proxy",
        "DaemonSet",
        SYSTEM_NAMESPACE,
        "",
        0.2,
        (_c("kube-proxy", 3, 25),),
        (("k8s-app", "kube-proxy"),),
    ),
    WorkloadProfile(
        "node-exporter",
        "DaemonSet",
        "monitoring",
        "",
        0.1,
        (_c("node-exporter", 4, 20), _c("kube-rbac-proxy", 1, 15, IDLE)),
        (
            ("app.kubernetes.io/name", "node-exporter"),
            ("app.kubernetes.io/part-of", "kube-prometheus"),
        ),
    ),
    WorkloadProfile(
        "fluent-bit",
        "DaemonSet",
        "logging",
        "",
        0.3,
        (_c("fluent-bit", 8, 40, BURST),),
        (("app.kubernetes.io/name", "fluent-bit"), ("app.kubernetes.io/instance", "fluent-bit")),
    ),
)

SYSTEM_DEPLOYMENTS: tuple[tuple[WorkloadProfile, int], ...] = (
    (
        WorkloadProfile(
            "coredns",
            "Deployment",
            SYSTEM_NAMESPACE,
            "",
            0.3,
            (_c("coredns", 3, 18),),
            (("k8s-app", "kube-dns"),),
        ),
        2,
    ),
    (
        WorkloadProfile(
            "metrics-server",
            "Deployment",
            SYSTEM_NAMESPACE,
            "",
            0.1,
            (_c("metrics-server", 5, 30),),
            (("k8s-app", "metrics-server"),),
        ),
        1,
    ),
)

CONTROL_PLANE: tuple[WorkloadProfile, ...] = tuple(
    WorkloadProfile(
        name,
        "Static",
        SYSTEM_NAMESPACE,
        "control-plane",
        0.2,
        (_c(name, cpu, mem, flags),),
        (("component", name), ("tier", "control-plane")),
    )
    for name, cpu, mem, flags in (
        ("etcd", 30, 110, LEAK),
        ("kube-apiserver", 60, 450, BURST),
        ("kube-controller-manager", 15, 60, 0),
        ("kube-scheduler", 3, 25, 0),
    )
)


NodeStyle = Literal["plain", "ec2", "gke", "aks"]
NODE_STYLES: tuple[NodeStyle, ...] = ("plain", "ec2", "gke", "aks")

EC2_REGIONS = ("us-east-1", "eu-west-1", "us-west-2")
EC2_INSTANCE_TYPES = (("m5.xlarge", "amd64"), ("m6i.2xlarge", "amd64"), ("m6g.xlarge", "arm64"))
GKE_POOLS = ("default-pool", "pool-1", "highmem-pool")
GKE_MACHINE_TYPES = (
    ("e2-standard-4", "amd64"),
    ("n2-highmem-8", "amd64"),
    ("t2a-standard-4", "arm64"),
)
AKS_POOLS = ("nodepool1", "userpool")


def encode_safe(value: int, length: int) -> str:
    """``value`` as ``length`` characters of `SAFE_ALPHABET` (low digit last)."""
    chars = []
    for _ in range(length):
        value, digit = divmod(value, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[digit])
    return "".join(reversed(chars))

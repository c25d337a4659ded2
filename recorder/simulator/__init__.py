"""A built-in Metrics API (metrics.k8s.io) simulator: demo, test and benchmark without a cluster.

`ClusterModel` is a deterministic simulated cluster (nodes, churning pods, usage that follows a
daily rhythm); `create_app` serves it, or fixed responses, with the paths and JSON of the
Kubernetes API server in front of metrics-server; `SimulatorServer` runs that on a loopback port
for tests; `serve` is ``recorder simulate``.
"""

from __future__ import annotations

from recorder.simulator.model import (
    ClusterModel,
    ContainerMetrics,
    Frame,
    NodeMetrics,
    PodMetrics,
    SimulatorConfig,
)
from recorder.simulator.server import (
    MetricsApi,
    Reply,
    SimulatorServer,
    StaticResponses,
    create_app,
    serve,
)

__all__ = [
    "ClusterModel",
    "ContainerMetrics",
    "Frame",
    "MetricsApi",
    "NodeMetrics",
    "PodMetrics",
    "Reply",
    "SimulatorConfig",
    "SimulatorServer",
    "StaticResponses",
    "create_app",
    "serve",
]

"""kube-metrics-recorder: keeps the history of the Kubernetes Metrics API."""

from __future__ import annotations

__version__ = "0.1.0"

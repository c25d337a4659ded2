"""Helpers for the tests of recorder/kube/: kubeconfig documents written to disk and loaded the
way the recorder loads them, a CA for PEM material, a fake clock, Metrics API list bodies
built item by item, decoded and normalized as the poller does, and ``PodsWhole`` for fake
Metrics API sources."""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from recorder.domain import Batch, Sample, SeriesKey
from recorder.kube.config import ClusterConfig, Sources, load_cluster_config
from recorder.kube.decode import decode_node_list, decode_pod_list
from recorder.kube.normalize import normalize_nodes, normalize_pods
from recorder.simulator.tls import CertificateAuthority

PEM_CA = CertificateAuthority.generate()
T = TypeVar("T")


class PodsWhole:
    """For a fake Metrics API source whose ``list_pods`` returns the whole body: the poller's
    ``read_pods``, handing that body over as one piece."""

    def list_pods(self, namespace: str | None = None) -> bytes:
        raise NotImplementedError

    def read_pods(self, consume: Callable[[Iterator[bytes]], T], namespace: str | None = None) -> T:
        return consume(iter((self.list_pods(namespace),)))


class Clock:
    """A fake clock; ``step`` moves it by whole simulator resolutions."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def step(self, buckets: int = 1, resolution: float = 15.0) -> None:
        self.now += buckets * resolution


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return path


def config_file(
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    contexts: dict[str, dict[str, Any]] | None = None,
    current: str | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": k, "cluster": v} for k, v in (clusters or {}).items()],
        "users": [{"name": k, "user": v} for k, v in (users or {}).items()],
        "contexts": [{"name": k, "context": v} for k, v in (contexts or {}).items()],
    }
    if current is not None:
        document["current-context"] = current
    return document


def load(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: dict[str, str] | None = None,
    api_url: str | None = None,
    sa_dir: Path | None = None,
    sources: Sources | None = None,
) -> ClusterConfig:
    return load_cluster_config(
        api_url=api_url,
        kubeconfig=kubeconfig,
        context=context,
        environ=environ if environ is not None else {},
        service_account_dir=sa_dir or Path("/nonexistent"),
        sources=sources,
    )


def headers(config: ClusterConfig) -> dict[str, str]:
    assert config.credentials is not None
    return dict(config.credentials.headers())


# --- Metrics API list bodies, decoded and normalized ------------------------------------------

KI, MI, GI = 1024, 1024**2, 1024**3


def utc_ms(*fields: int, ms: int = 0) -> int:
    return calendar.timegm((*fields, 0, 0, 0)) * 1000 + ms


NOW_MS = utc_ms(2025, 1, 1, 0, 0, 0)
"""The recorder's clock in these tests: after every fixture's timestamps."""


T0 = "2024-05-01T10:00:00Z"
T0_MS = utc_ms(2024, 5, 1, 10, 0, 0)


def node(name: object = "good", **fields: object) -> dict[str, object]:
    item: dict[str, object] = {
        "metadata": {"name": name},
        "timestamp": T0,
        "window": "30s",
        "usage": {"cpu": "250m", "memory": "1Gi"},
    }
    item.update(fields)
    return item


def pod(
    name: object = "web-1", namespace: object = "shop", labels: object = None, **fields: object
) -> dict[str, object]:
    item: dict[str, object] = {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": "web"}},
        "timestamp": T0,
        "window": "30s",
        "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "1Gi"}}],
    }
    item.update(fields)
    return item


def list_body(kind: str, *items: object) -> bytes:
    return json.dumps(
        {"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "items": items}
    ).encode()


def nodes_of(body: bytes, now_ms: int = NOW_MS, **kwargs: int) -> Batch:
    """Decode and normalize a node list; decode rejections come first, as the poller adds them."""
    items, bad = decode_node_list(body)
    batch = normalize_nodes(items, now_ms=now_ms, **kwargs)
    return Batch(batch.kind, batch.samples, batch.pod_labels, (*bad, *batch.rejections))


def pods_of(body: bytes, now_ms: int = NOW_MS) -> Batch:
    items, bad = decode_pod_list(body)
    batch = normalize_pods(items, now_ms=now_ms)
    return Batch(batch.kind, batch.samples, batch.pod_labels, (*bad, *batch.rejections))


GOOD_NODE = Sample(SeriesKey.for_node("good"), T0_MS, 30_000, 250_000_000, GI)


def assert_only_bad_rejected(batch: Batch, reason: str, *, name: str = "bad") -> str:
    assert batch.samples == (GOOD_NODE,)
    assert [(r.name, r.reason) for r in batch.rejections] == [(name, reason)]
    return batch.rejections[0].detail

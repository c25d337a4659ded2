"""Helpers for the tests of recorder/kube/: kubeconfig documents written to disk and loaded the
way the recorder loads them, a CA for PEM material, and a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recorder.kube.config import ClusterConfig, Sources, load_cluster_config
from recorder.simulator.tls import CertificateAuthority

PEM_CA = CertificateAuthority.generate()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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

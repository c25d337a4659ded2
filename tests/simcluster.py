"""A simulated cluster behind real TLS, authentication, RBAC and fault switches, on loopback.

Shared by the Kubernetes-access tests: `secure_cluster()` starts it; `SecureCluster.kubeconfig`
writes kubeconfigs for each credential mode.
"""

from __future__ import annotations

import base64
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.access import AccessControl, AccessMiddleware, Identity
from recorder.simulator.faults import FaultMiddleware, Faults
from recorder.simulator.kubeconfig import kubeconfig_document, write_kubeconfig
from recorder.simulator.server import ServerTls
from recorder.simulator.tls import LOOPBACK_NAMES, CertificateAuthority

CLUSTER_READER = Identity("system:serviceaccount:monitoring:kube-metrics-recorder")
TEAM_READER = Identity(
    "system:serviceaccount:shop:kube-metrics-recorder", namespaces=frozenset({"default", "shop"})
)
CERT_USER = Identity("recorder-cert", ("recorders",))
TEAM_NAMESPACES = ("default", "shop")


@dataclass
class SecureCluster:
    url: str
    ca: CertificateAuthority
    access: AccessControl
    faults: Faults
    model: ClusterModel
    cluster_token: str
    team_token: str
    paths: list[str]
    """Every path requested, in order."""

    def kubeconfig(
        self,
        path: Path,
        *,
        user: dict[str, Any] | None = None,
        cluster: dict[str, Any] | None = None,
        with_ca: bool = True,
    ) -> Path:
        """A kubeconfig for this cluster; ``user`` defaults to the cluster-wide token."""
        document = kubeconfig_document(
            self.url,
            ca_pem=self.ca.cert_pem if with_ca else None,
            extra_user=user if user is not None else {"token": self.cluster_token},
            extra_cluster=cluster,
        )
        return write_kubeconfig(path, document)

    def client_certificate_user(self) -> dict[str, str]:
        pair = self.ca.issue_client(CERT_USER.user, CERT_USER.groups)
        return {
            "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
            "client-key-data": base64.b64encode(pair.key_pem).decode(),
        }


class _PathLog:
    def __init__(self, app: ASGIApp, paths: list[str]) -> None:
        self._app = app
        self._paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._paths.append(scope["path"])
        await self._app(scope, receive, send)


@contextmanager
def secure_cluster(
    *,
    serve_v1: bool = False,
    names: Sequence[str] = LOOPBACK_NAMES,
    ca: CertificateAuthority | None = None,
    extra_middleware: Sequence[Middleware] = (),
    config: SimulatorConfig | None = None,
) -> Iterator[SecureCluster]:
    ca = ca or CertificateAuthority.generate()
    model = ClusterModel(
        config
        or SimulatorConfig(
            nodes=3, pods=24, seed=5, namespaces=("default", "kube-system", "shop", "monitoring")
        )
    )
    access = AccessControl()
    cluster_token = access.add_token(CLUSTER_READER)
    team_token = access.add_token(TEAM_READER)
    access.add_certificate_user(CERT_USER)
    faults = Faults()
    paths: list[str] = []
    app = create_app(
        model,
        serve_v1=serve_v1,
        core_api=True,
        middleware=[
            Middleware(_PathLog, paths=paths),
            Middleware(AccessMiddleware, control=access),
            *extra_middleware,
            Middleware(FaultMiddleware, faults=faults),
        ],
    )
    served = ca.issue_server(names)
    tls = ServerTls(served.cert_pem, served.key_pem, client_ca_pem=ca.cert_pem)
    with SimulatorServer(app, tls=tls) as server:
        yield SecureCluster(server.url, ca, access, faults, model, cluster_token, team_token, paths)


def exec_plugin_script(directory: Path, *, api_version: str) -> Path:
    """A credential plugin: prints the token in ``token`` beside it (or a client certificate
    from ``cert.pem``/``key.pem``), checks the protocol's inputs, counts its runs in ``runs``."""
    script = directory / "plugin.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import json, os, pathlib, sys
            here = pathlib.Path(__file__).parent
            info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
            assert info["apiVersion"] == {api_version!r}, info
            assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False
            assert os.environ.get("PLUGIN_MODE") == "test", "env from the kubeconfig is missing"
            assert sys.argv[1:] == ["--cluster", "sim"], sys.argv
            runs = here / "runs"
            runs.write_text(str(int(runs.read_text() or 0) + 1 if runs.exists() else 1))
            status = {{}}
            if (here / "token").exists():
                status["token"] = (here / "token").read_text().strip()
            if (here / "cert.pem").exists():
                status["clientCertificateData"] = (here / "cert.pem").read_text()
                status["clientKeyData"] = (here / "key.pem").read_text()
            if (here / "expires").exists():
                status["expirationTimestamp"] = (here / "expires").read_text().strip()
            if "cluster" in info["spec"]:
                (here / "cluster.json").write_text(json.dumps(info["spec"]["cluster"]))
            print(json.dumps({{"apiVersion": {api_version!r}, "kind": "ExecCredential",
                              "status": status}}))
            """
        )
    )
    return script


def exec_user(script: Path, *, api_version: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "apiVersion": api_version,
        "command": sys.executable,
        "args": [str(script), "--cluster", "sim"],
        "env": [{"name": "PLUGIN_MODE", "value": "test"}],
        **extra,
    }
    if api_version.endswith("/v1"):
        spec.setdefault("interactiveMode", "Never")
    return {"exec": spec}

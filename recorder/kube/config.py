"""Where the Metrics API is and how to authenticate to it.

Precedence, as kubectl users expect: ``--api-url`` (e.g. ``kubectl proxy``, plain, no
credentials) > ``--kubeconfig``/``KUBECONFIG`` > in-cluster service account. The loaders return a
``ClusterConfig``; the client never looks at files or the environment itself.
"""

from __future__ import annotations

import base64
import logging
import ssl
import tempfile
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from recorder.errors import ConfigError

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class BearerTokenAuth(httpx.Auth):
    """Sends ``Authorization: Bearer``; the token comes from a source that is asked again on a
    401, so a rotated token file (bound service-account tokens, ``tokenFile``) costs no poll."""

    def __init__(self, token_source: Callable[[], str]):
        self._source = token_source
        self._token = token_source()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            fresh = self._source()
            if fresh != self._token:
                self._token = fresh
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


def _file_token(path: Path) -> Callable[[], str]:
    def read() -> str:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {path}: {exc}") from exc

    return read


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    verify: bool | ssl.SSLContext = True
    auth: httpx.Auth | None = None
    source: str = "api-url"
    """Human description of where this came from, for error messages (no secrets)."""
    identity: str | None = None
    """Who we authenticate as when known (service account, kubeconfig user), for 403 hints."""


def load_cluster_config(
    *,
    api_url: str | None,
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str],
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ClusterConfig:
    if api_url:
        return ClusterConfig(server=api_url.rstrip("/"), source=f"--api-url {api_url}")
    if kubeconfig:
        return _from_kubeconfig(kubeconfig, context)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(environ, service_account_dir)
    raise ConfigError(
        "no cluster is configured: pass --api-url (e.g. http://127.0.0.1:8001 from "
        "`kubectl proxy`), --kubeconfig or KUBECONFIG, or run inside a cluster. "
        "To try the recorder without a cluster, run `recorder demo`."
    )


def _in_cluster(environ: Mapping[str, str], sa_dir: Path) -> ClusterConfig:
    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    token_path = sa_dir / "token"
    ca_path = sa_dir / "ca.crt"
    if not token_path.exists():
        raise ConfigError(
            f"running in a cluster but {token_path} is missing: is automountServiceAccountToken "
            "disabled for this pod?"
        )
    namespace_path = sa_dir / "namespace"
    namespace = namespace_path.read_text().strip() if namespace_path.exists() else "?"
    verify: bool | ssl.SSLContext = (
        ssl.create_default_context(cafile=str(ca_path)) if ca_path.exists() else True
    )
    return ClusterConfig(
        server=f"https://{host}:{port}",
        verify=verify,
        auth=BearerTokenAuth(_file_token(token_path)),
        source="in-cluster service account",
        identity=f"system:serviceaccount:{namespace}:<this pod's service account>",
    )


def _from_kubeconfig(paths: str, context_name: str | None) -> ClusterConfig:
    first = Path(paths.split(":")[0]).expanduser()
    try:
        document: Any = yaml.safe_load(first.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {first}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {first} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"kubeconfig {first} is empty or not a mapping")
    base = first.parent
    name = context_name or document.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {first} has no current-context; pass --context")
    context = _named(document, "contexts", "context", name, first)
    cluster = _named(document, "clusters", "cluster", context.get("cluster"), first)
    user_name = context.get("user")
    user = _named(document, "users", "user", user_name, first) if user_name else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"cluster {context.get('cluster')!r} in {first} has no server")

    verify: bool | ssl.SSLContext = True
    if cluster.get("insecure-skip-tls-verify"):
        log.warning("insecure-skip-tls-verify is set in %s: the server is NOT authenticated", first)
        verify = False
    ca_file = _material(cluster, "certificate-authority", base)
    cert_file = _material(user, "client-certificate", base)
    key_file = _material(user, "client-key", base)
    if verify is not False and (ca_file or cert_file):
        context_ssl = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            if not key_file:
                raise ConfigError(f"user {user_name!r} in {first} has a certificate but no key")
            context_ssl.load_cert_chain(cert_file, key_file)
        verify = context_ssl

    auth: httpx.Auth | None = None
    if user.get("token"):
        token = str(user["token"])
        auth = BearerTokenAuth(lambda: token)
    elif user.get("tokenFile"):
        auth = BearerTokenAuth(_file_token(_resolve(base, user["tokenFile"])))
    return ClusterConfig(
        server=str(server).rstrip("/"),
        verify=verify,
        auth=auth,
        source=f"kubeconfig {first} context {name}",
        identity=f"kubeconfig user {user_name}" if user_name else None,
    )


def _named(document: dict[str, Any], section: str, field: str, name: Any, path: Path) -> Any:
    for entry in document.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field)
            return value if isinstance(value, dict) else {}
    raise ConfigError(f"kubeconfig {path} has no {field} named {name!r} in {section}")


def _resolve(base: Path, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _material(section: dict[str, Any], key: str, base: Path) -> str | None:
    """A file path for ``key`` or ``key-data`` (base64 PEM written to a private temp file)."""
    data = section.get(f"{key}-data")
    if data:
        try:
            pem = base64.b64decode(str(data), validate=True)
        except ValueError as exc:
            raise ConfigError(f"{key}-data in the kubeconfig is not valid base64") from exc
        handle = tempfile.NamedTemporaryFile(prefix="recorder-", suffix=".pem", delete=False)
        with handle:
            handle.write(pem)
        return handle.name
    if section.get(key):
        return str(_resolve(base, section[key]))
    return None

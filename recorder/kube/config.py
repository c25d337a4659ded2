"""Where the Kubernetes API is and how to authenticate to it.

Precedence, as kubectl users expect: ``--api-url`` (e.g. ``kubectl proxy``, no credentials) >
``--kubeconfig`` > ``KUBECONFIG`` > ``~/.kube/config`` when it exists (client-go prefers it to
the in-cluster account too) > the in-cluster service account. The loaders return a
``ClusterConfig``; the client never reads files or the environment itself (the credential
sources it holds re-read their own files).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from recorder.errors import ConfigError
from recorder.kube.credentials import (
    CertificateSource,
    Credentials,
    FileCertificate,
    FileToken,
    StaticCertificate,
    StaticToken,
    TokenSource,
)
from recorder.kube.exec_plugin import ExecPlugin, parse_exec_spec
from recorder.kube.kubeconfig import (
    KubeconfigSelection,
    kubeconfig_paths,
    load_kubeconfig,
    select_context,
)
from recorder.kube.tls import ClientCertificate, TlsSettings, read_pem
from recorder.settings import redact_url

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PROXY_SCHEMES = ("http", "https", "socks5")


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    tls: TlsSettings = field(default_factory=TlsSettings)
    credentials: Credentials | None = None
    proxy: str | None = None
    source: str = "api-url"
    """Human description of where this came from, for error messages (no secrets)."""
    namespace: str | None = None
    """The namespace of the kubeconfig context or service account, when known."""
    context: str | None = None
    """The kubeconfig context's name, when the configuration came from one (the default
    cluster name of a new history)."""
    in_cluster: bool = False
    """Whether this is the pod's service account (the cluster's name then comes from the UID
    of its ``kube-system`` namespace: ``recorder.kube.identity``)."""

    @property
    def identity(self) -> str | None:
        """Who we authenticate as when known, for 401/403 messages."""
        return self.credentials.identity() if self.credentials is not None else None


@dataclass(frozen=True, slots=True)
class Sources:
    """Hooks for tests: clocks and how often credential files are read again."""

    reread_seconds: float = 60.0
    monotonic: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    announce: bool = True
    """Log the configuration's warnings (a second load in the same service does not)."""


def load_cluster_config(
    *,
    api_url: str | None,
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str],
    service_account_dir: Path | None = None,
    sources: Sources | None = None,
    announce: bool = True,
) -> ClusterConfig:
    """The cluster to read, by precedence. ``kubeconfig`` is the explicit flag; ``KUBECONFIG``
    and ``HOME`` are read from ``environ``. ``announce``: log the configuration's warnings
    (insecure-skip-tls-verify, a missing CA), which a second load in the same service (the
    worker process) leaves out."""
    sources = sources or Sources()
    if not announce:
        sources = replace(sources, announce=False)
    if api_url:
        return from_api_url(api_url)
    paths, explicit = kubeconfig_paths(kubeconfig, environ)
    if kubeconfig or environ.get("KUBECONFIG"):
        merged = load_kubeconfig(paths, explicit=explicit)
        if not merged.files:
            named = "--kubeconfig (RECORDER_KUBECONFIG)" if kubeconfig else "KUBECONFIG"
            raise ConfigError(
                f"{named} names no kubeconfig that exists ({merged.describe_files()}): "
                "fix the path(s) (several are separated by ':')"
            )
        return from_kubeconfig(select_context(merged, context), environ, sources)
    in_a_pod = bool(environ.get("KUBERNETES_SERVICE_HOST"))
    if paths and paths[0].is_file():  # ~/.kube/config
        merged = load_kubeconfig(paths, explicit=False)
        # Like client-go: a home kubeconfig that selects nothing gives way to the pod's account.
        if context or merged.current_context or not in_a_pod:
            return from_kubeconfig(select_context(merged, context), environ, sources)
    if in_a_pod:
        return in_cluster(environ, service_account_dir or SERVICE_ACCOUNT_DIR, sources)
    raise ConfigError(
        "no cluster is configured: pass --api-url (e.g. http://127.0.0.1:8001 from "
        "`kubectl proxy`), --kubeconfig or KUBECONFIG, or run inside a cluster. "
        "To try the recorder without a cluster, run `recorder demo`."
    )


def from_api_url(api_url: str) -> ClusterConfig:
    """``--api-url``: a plain base URL (``kubectl proxy``'s), no TLS settings. User
    information in it (``http://user:password@host``) becomes basic authentication and leaves
    the URL, so no log line, message or response ever shows it."""
    try:
        parts = urlsplit(api_url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"--api-url must be an http:// or https:// URL, got {redact_url(api_url)!r}"
        ) from None
    credentials = None
    if parts.username is not None or parts.password is not None:
        user = unquote(parts.username or "")
        credentials = Credentials(
            basic=(user, unquote(parts.password or "")),
            name=f"the user {user!r} of --api-url",
        )
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{port}" if port is not None else str(host)
        api_url = parts._replace(netloc=netloc).geturl()
    server = _server_url(api_url, "--api-url")
    return ClusterConfig(server=server, credentials=credentials, source=f"--api-url {server}")


def _server_url(value: str, what: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, got {redact_url(value)!r}")
    if "@" in parts.netloc:
        raise ConfigError(
            f"{what} holds credentials ({redact_url(value)}): the recorder never puts them in "
            "a URL, where logs would show them; give them to the kubeconfig's user "
            "(token, tokenFile, username and password, or a client certificate)"
        )
    return value.rstrip("/")


# --- in-cluster ---------------------------------------------------------------------------


def in_cluster(environ: Mapping[str, str], sa_dir: Path, sources: Sources) -> ClusterConfig:
    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not port:
        raise ConfigError(
            "KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not: the pod's "
            "environment is incomplete; pass --kubeconfig or --api-url instead"
        )
    if ":" in host and not host.startswith("["):  # IPv6 literal
        host = f"[{host}]"
    token_path = sa_dir / "token"
    if not token_path.is_file():
        raise ConfigError(
            f"running in a cluster but {token_path} is missing: is automountServiceAccountToken "
            "false for this pod or its service account? Set it to true, or mount a projected "
            "token there"
        )
    ca_path = sa_dir / "ca.crt"
    tls = TlsSettings()
    if ca_path.is_file():
        tls = TlsSettings(ca_pem=read_pem(str(ca_path), "the CA"), ca_source=f"the CA {ca_path}")
    elif sources.announce:
        log.warning("%s is missing: verifying the API server with the system trust store", ca_path)
    namespace_path = sa_dir / "namespace"
    namespace = namespace_path.read_text().strip() if namespace_path.is_file() else None
    token = FileToken(
        token_path,
        "the service-account token",
        reread_seconds=sources.reread_seconds,
        clock=sources.monotonic,
    )
    account = f"a service account in namespace {namespace}" if namespace else "a service account"
    return ClusterConfig(
        server=f"https://{host}:{port}",
        tls=tls,
        credentials=Credentials(token=token, name=account),
        source="the in-cluster service account",
        namespace=namespace,
        in_cluster=True,
    )


# --- kubeconfig ---------------------------------------------------------------------------


def from_kubeconfig(
    chosen: KubeconfigSelection, environ: Mapping[str, str], sources: Sources
) -> ClusterConfig:
    cluster = chosen.cluster
    files = ", ".join(str(f) for f in chosen.files)
    where = f"cluster {chosen.cluster_name!r} in {chosen.cluster_origin}"
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"{where} has no server")
    server = _server_url(server, f"the server of {where}")
    tls = _tls_settings(cluster, where)
    if tls.insecure and sources.announce:
        log.warning(
            "insecure-skip-tls-verify is set for %s: the API server's certificate is NOT "
            "checked, so anyone in the network path can read the credentials sent to it",
            where,
        )
    proxy = cluster.get("proxy-url") or None
    if proxy is not None:
        scheme = urlsplit(str(proxy)).scheme
        if scheme not in PROXY_SCHEMES:
            raise ConfigError(
                f"proxy-url of {where} has scheme {scheme!r}; use one of {', '.join(PROXY_SCHEMES)}"
            )
        proxy = str(proxy)  # its credentials, if any, are for httpx: shown only redacted
    credentials = (
        _user_credentials(chosen, tls, environ, sources) if chosen.user_name is not None else None
    )
    return ClusterConfig(
        server=server,
        tls=tls,
        credentials=credentials,
        proxy=proxy,
        source=f"kubeconfig {files}, context {chosen.context_name!r}",
        namespace=chosen.namespace,
        context=chosen.context_name,
    )


def _decode_data(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value).strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"{what} is not valid base64 (it holds the PEM, base64-encoded)") from exc


def _tls_settings(cluster: Mapping[str, Any], where: str) -> TlsSettings:
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    server_name = cluster.get("tls-server-name") or None
    ca_data, ca_file = (
        cluster.get("certificate-authority-data"),
        cluster.get("certificate-authority"),
    )
    if insecure and (ca_data or ca_file):
        raise ConfigError(
            f"{where} sets both insecure-skip-tls-verify and a certificate authority; kubectl "
            "refuses that too: remove one of them"
        )
    if ca_data:
        return TlsSettings(
            ca_pem=_decode_data(ca_data, f"certificate-authority-data of {where}"),
            ca_source=f"certificate-authority-data of {where}",
            server_name=server_name,
        )
    if ca_file:
        return TlsSettings(
            ca_pem=read_pem(str(ca_file), f"the certificate-authority of {where}:"),
            ca_source=f"the certificate-authority {ca_file} of {where}",
            server_name=server_name,
        )
    return TlsSettings(insecure=insecure, server_name=server_name)


def _user_credentials(
    chosen: KubeconfigSelection,
    tls: TlsSettings,
    environ: Mapping[str, str],
    sources: Sources,
) -> Credentials:
    user = chosen.user
    name = f"kubeconfig user {chosen.user_name!r}"
    where = f"user {chosen.user_name!r} in {chosen.user_origin}"
    if user.get("auth-provider"):
        provider = (
            user["auth-provider"].get("name", "?")
            if isinstance(user["auth-provider"], dict)
            else "?"
        )
        raise ConfigError(
            f"{where} uses auth-provider {provider!r}, which kubectl itself no longer supports; "
            "switch to its exec credential plugin (gke-gcloud-auth-plugin, kubelogin, ...)"
        )
    token: TokenSource | None = None
    if user.get("tokenFile"):
        static = str(user["token"]) if user.get("token") else None
        token = FileToken(
            Path(str(user["tokenFile"])),
            f"tokenFile of {where}",
            reread_seconds=sources.reread_seconds,
            clock=sources.monotonic,
            fallback=static,
        )
    elif user.get("token"):
        token = StaticToken(str(user["token"]), f"the token of {where}")
    basic = None
    if user.get("username") or user.get("password"):
        basic = (str(user.get("username") or ""), str(user.get("password") or ""))
    certificate = _certificate(user, where, sources)
    impersonate = None
    if user.get("as"):
        groups = user.get("as-groups") or []
        impersonate = (str(user["as"]), tuple(str(g) for g in groups))
    exec_plugin = None
    if user.get("exec") and token is None and basic is None and certificate is None:
        spec = parse_exec_spec(
            user["exec"], user_name=str(chosen.user_name), cluster=chosen.cluster, ca_pem=tls.ca_pem
        )
        exec_plugin = ExecPlugin(spec, environ=environ, clock=sources.wall_clock)
    return Credentials(
        token=token,
        certificate=certificate,
        basic=basic,
        exec_plugin=exec_plugin,
        impersonate=impersonate,
        name=name,
    )


def _certificate(user: Mapping[str, Any], where: str, sources: Sources) -> CertificateSource | None:
    cert_data, cert_file = user.get("client-certificate-data"), user.get("client-certificate")
    key_data, key_file = user.get("client-key-data"), user.get("client-key")
    has_cert, has_key = bool(cert_data or cert_file), bool(key_data or key_file)
    if not has_cert and not has_key:
        return None
    if has_cert != has_key:
        missing = "client-key(-data)" if has_cert else "client-certificate(-data)"
        raise ConfigError(f"{where} has a client certificate or key but no {missing}")
    if not cert_data and not key_data:
        return FileCertificate(
            Path(str(cert_file)),
            Path(str(key_file)),
            f"client-certificate {cert_file} of {where}",
            reread_seconds=sources.reread_seconds,
            clock=sources.monotonic,
        )
    cert = (
        _decode_data(cert_data, f"client-certificate-data of {where}")
        if cert_data
        else read_pem(str(cert_file), f"the client-certificate of {where}:")
    )
    key = (
        _decode_data(key_data, f"client-key-data of {where}")
        if key_data
        else read_pem(str(key_file), f"the client-key of {where}:")
    )
    return StaticCertificate(ClientCertificate(cert, key, f"the client certificate of {where}"))

"""Exec credential plugins (``users[].user.exec``): run a command, read an ``ExecCredential``.

The protocol of ``client.authentication.k8s.io`` ``v1`` and ``v1beta1``: the plugin gets
``KUBERNETES_EXEC_INFO`` (an ``ExecCredential`` with ``spec.interactive`` and, when
``provideClusterInfo`` is set, ``spec.cluster``) plus the configured ``env``, and prints an
``ExecCredential`` whose ``status`` holds a ``token`` and/or ``clientCertificateData`` and
``clientKeyData``, optionally with ``expirationTimestamp``. The credential is cached until it
expires and the plugin is run again after a 401, like client-go does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from recorder.errors import ConfigError, CredentialsError
from recorder.kube.tls import ClientCertificate

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
RUN_TIMEOUT_SECONDS = 120.0
EXPIRY_MARGIN_SECONDS = 5.0
"""Run the plugin again this long before the credential expires, not after a 401."""


@dataclass(frozen=True, slots=True)
class ExecSpec:
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_version: str
    interactive_mode: str
    install_hint: str | None
    cluster_info: Mapping[str, Any] | None = field(default=None, repr=False)
    user_name: str = "?"


def parse_exec_spec(
    raw: Any, *, user_name: str, cluster: Mapping[str, Any], ca_pem: bytes | None
) -> ExecSpec:
    """Validate a kubeconfig ``exec`` section (paths already resolved)."""
    where = f"the exec section of kubeconfig user {user_name!r}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    command = raw.get("command")
    if not isinstance(command, str) or not command:
        raise ConfigError(f"{where} has no command")
    api_version = raw.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise ConfigError(
            f"{where} has apiVersion {api_version!r}; supported: {', '.join(API_VERSIONS)} "
            "(v1alpha1 was removed from Kubernetes; update the plugin or the kubeconfig)"
        )
    mode = raw.get("interactiveMode")
    if mode is None:
        if api_version.endswith("/v1"):
            raise ConfigError(
                f"{where} must set interactiveMode (Never, IfAvailable or Always) for {api_version}"
            )
        mode = "IfAvailable"
    if mode not in INTERACTIVE_MODES:
        raise ConfigError(f"{where} has interactiveMode {mode!r}; use one of {INTERACTIVE_MODES}")
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings")
    env_pairs: list[tuple[str, str]] = []
    for item in raw.get("env") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: every env entry needs a name and a value")
        env_pairs.append((item["name"], str(item.get("value", ""))))
    cluster_info = _cluster_info(cluster, ca_pem) if raw.get("provideClusterInfo") else None
    hint = raw.get("installHint")
    return ExecSpec(
        command=command,
        args=tuple(args),
        env=tuple(env_pairs),
        api_version=api_version,
        interactive_mode=mode,
        install_hint=str(hint).strip() if hint else None,
        cluster_info=cluster_info,
        user_name=user_name,
    )


def _cluster_info(cluster: Mapping[str, Any], ca_pem: bytes | None) -> dict[str, Any]:
    info: dict[str, Any] = {"server": cluster.get("server")}
    for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url", "disable-compression"):
        if cluster.get(key):
            info[key] = cluster[key]
    if ca_pem is not None:
        info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


class _Status(msgspec.Struct, kw_only=True):
    token: str | None = None
    clientCertificateData: str | None = None
    clientKeyData: str | None = None
    expirationTimestamp: str | None = None


class _ExecCredential(msgspec.Struct, kw_only=True):
    apiVersion: str | None = None
    kind: str | None = None
    status: _Status | None = None


@dataclass(frozen=True, slots=True)
class ExecCredential:
    token: str | None = field(default=None, repr=False)
    certificate: ClientCertificate | None = None
    expires_at: float | None = None


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class ExecPlugin:
    """Runs the plugin when needed and caches its credential until ``expirationTimestamp``."""

    def __init__(
        self,
        spec: ExecSpec,
        *,
        environ: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        stdin_is_terminal: Callable[[], bool] | None = None,
        run: Runner = subprocess.run,
    ) -> None:
        self.spec = spec
        self._environ = dict(environ)
        self._clock = clock
        self._stdin_is_terminal = stdin_is_terminal or _stdin_is_terminal
        self._run = run
        self._cached: ExecCredential | None = None
        self._lock = threading.Lock()
        self.runs = 0
        """How many times the plugin was run (for tests and debugging)."""

    @property
    def describe(self) -> str:
        spec = self.spec
        return f"exec credential plugin {spec.command!r} (kubeconfig user {spec.user_name!r})"

    def credential(self) -> ExecCredential:
        with self._lock:
            cached = self._cached
            if cached is not None and not self._expired(cached):
                return cached
            self._cached = self._execute()
            return self._cached

    def refresh(self) -> bool:
        """After a 401: run the plugin again; True when it returned something new."""
        with self._lock:
            old = self._cached
            self._cached = self._execute()
            return old is None or self._cached != old

    def _expired(self, credential: ExecCredential) -> bool:
        if credential.expires_at is None:
            return False
        return self._clock() >= credential.expires_at - EXPIRY_MARGIN_SECONDS

    def _interactive(self) -> bool:
        mode = self.spec.interactive_mode
        if mode == "Never":
            return False
        terminal = self._stdin_is_terminal()
        if mode == "Always" and not terminal:
            raise CredentialsError(
                f"{self.describe} has interactiveMode: Always but standard input is not a "
                "terminal; the recorder runs unattended, so give it a credential that needs no "
                "prompt (a service-account token, a client certificate, or a plugin configured "
                "for non-interactive use)"
            )
        return terminal

    def _execute(self) -> ExecCredential:
        spec = self.spec
        interactive = self._interactive()
        request: dict[str, Any] = {"interactive": interactive}
        if spec.cluster_info is not None:
            request["cluster"] = spec.cluster_info
        env = {**self._environ, **dict(spec.env)}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": spec.api_version, "kind": "ExecCredential", "spec": request}
        )
        self.runs += 1
        try:
            completed = self._run(
                [spec.command, *spec.args],
                env=env,
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None if interactive else subprocess.PIPE,
                timeout=RUN_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError as exc:
            hint = f" {spec.install_hint}" if spec.install_hint else ""
            raise CredentialsError(
                f"{self.describe}: the command {spec.command!r} was not found (is it installed "
                f"and on PATH?).{hint}"
            ) from exc
        except PermissionError as exc:
            raise CredentialsError(
                f"{self.describe}: {spec.command!r} is not executable: {exc.strerror or exc}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CredentialsError(
                f"{self.describe} did not finish within {RUN_TIMEOUT_SECONDS:g} s"
            ) from exc
        if completed.returncode != 0:
            stderr = (completed.stderr or b"").decode("utf-8", "replace").strip()
            said = f"; it said: {stderr[-2000:]}" if stderr else ""
            raise CredentialsError(
                f"{self.describe} failed with exit code {completed.returncode}{said}"
            )
        return self._parse(completed.stdout or b"")

    def _parse(self, stdout: bytes) -> ExecCredential:
        try:
            output = msgspec.json.decode(stdout, type=_ExecCredential)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CredentialsError(
                f"{self.describe} printed something that is not an ExecCredential ({exc})"
            ) from exc
        if output.kind != "ExecCredential" or output.apiVersion != self.spec.api_version:
            raise CredentialsError(
                f"{self.describe} printed kind {output.kind!r} apiVersion {output.apiVersion!r}; "
                f"expected an ExecCredential of {self.spec.api_version} as configured"
            )
        status = output.status
        if status is None:
            raise CredentialsError(f"{self.describe} returned an ExecCredential without status")
        has_cert = bool(status.clientCertificateData)
        if has_cert != bool(status.clientKeyData):
            raise CredentialsError(
                f"{self.describe} returned only one of clientCertificateData and clientKeyData"
            )
        if not status.token and not has_cert:
            raise CredentialsError(
                f"{self.describe} returned neither a token nor a client certificate and key"
            )
        expires_at = None
        if status.expirationTimestamp:
            try:
                stamp = status.expirationTimestamp.replace("Z", "+00:00").replace("z", "+00:00")
                expires_at = datetime.fromisoformat(stamp).timestamp()
            except ValueError as exc:
                raise CredentialsError(
                    f"{self.describe} returned expirationTimestamp "
                    f"{status.expirationTimestamp!r}, which is not RFC 3339"
                ) from exc
        certificate = None
        if status.clientCertificateData and status.clientKeyData:
            certificate = ClientCertificate(
                status.clientCertificateData.encode(),
                status.clientKeyData.encode(),
                self.describe,
            )
        return ExecCredential(status.token or None, certificate, expires_at)


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return False

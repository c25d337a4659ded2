"""A kubeconfig pointing at the simulator, for kubectl and for the recorder itself."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from recorder.errors import ConfigError

__all__ = ["CONTEXT", "kubeconfig_document", "write_kubeconfig"]

CONTEXT = "recorder-simulator"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_document(
    server: str,
    *,
    ca_pem: bytes | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    extra_user: dict[str, Any] | None = None,
    extra_cluster: dict[str, Any] | None = None,
    name: str = CONTEXT,
) -> dict[str, Any]:
    """One cluster, one user and one context, all called ``name`` (the current context)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    cluster.update(extra_cluster or {})
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if token_file is not None:
        user["tokenFile"] = str(token_file)
    if client_cert_pem is not None and client_key_pem is not None:
        user["client-certificate-data"] = _b64(client_cert_pem)
        user["client-key-data"] = _b64(client_key_pem)
    user.update(extra_user or {})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def check_writable(path: Path, flag: str = "--write-kubeconfig") -> None:
    """Refuse, before anything starts, a path the simulator is to write (the kubeconfig, the
    token file) that cannot be written: its folder is missing (it is not created: a typo would
    scatter folders) or not writable, or the path is a folder. A ``ConfigError`` naming
    ``flag``."""
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name, e.g. {path / 'kc'}")
    if not folder.is_dir():
        raise ConfigError(
            f"{flag} {path}: the folder {folder} does not exist; create it first "
            f"(mkdir -p {folder})"
        )
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag} {path}: the folder {folder} is not writable")


def write_kubeconfig(path: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` to ``path`` with mode 0600 (it may hold a token or a key), whole or not
    at all: a reader waiting for the file (``simulate --background``, a script) never sees half
    of it. A ``ConfigError`` when it cannot."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(document, handle, sort_keys=False)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the kubeconfig {path}: {(exc.strerror or str(exc)).lower()}"
        ) from None
    return path

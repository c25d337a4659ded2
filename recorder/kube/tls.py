"""TLS for the API server connection: whom to trust, which name to check, what to present.

Key material stays in memory. ``ssl.SSLContext.load_cert_chain`` only reads files, so a client
certificate and key given as data are written to a private directory (mode 0700, files 0600),
loaded, and deleted straight away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recorder.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A PEM certificate (chain) and its private key, and where they came from (no secrets)."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    source: str


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to verify the API server.

    ``ca_pem`` None means the system's trust store (plus ``SSL_CERT_FILE``/``SSL_CERT_DIR``);
    ``ca_source`` says in words which CA is in use, for error messages.
    """

    ca_pem: bytes | None = field(default=None, repr=False)
    ca_source: str = "the system trust store"
    insecure: bool = False
    server_name: str | None = None


def build_ssl_context(tls: TlsSettings, certificate: ClientCertificate | None) -> ssl.SSLContext:
    if tls.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_pem is not None:
        try:
            # Only this CA: passing cadata keeps the system trust store out, as kubectl does.
            context = ssl.create_default_context(cadata=tls.ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{tls.ca_source} holds no usable PEM certificate ({exc}); fix it or remove it"
            ) from exc
    else:
        # The system trust store, as the README says: OpenSSL's default paths, which
        # SSL_CERT_FILE and SSL_CERT_DIR override (httpx's own default would be certifi's).
        context = ssl.create_default_context()
    if certificate is not None:
        load_client_certificate(context, certificate)
    return context


def system_trust_store() -> str:
    """Which files the system trust store is read from, in words, for error messages."""
    paths = ssl.get_default_verify_paths()
    found = [p for p in (paths.cafile, paths.capath) if p]
    where = " and ".join(found) if found else "no CA file or folder found"
    return (
        f"the system trust store ({where}; {paths.openssl_cafile_env} or "
        f"{paths.openssl_capath_env} choose others)"
    )


def load_client_certificate(context: ssl.SSLContext, certificate: ClientCertificate) -> None:
    with _private_files(certificate.cert_pem, certificate.key_pem) as (cert_file, key_file):
        try:
            context.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"the client certificate or key from {certificate.source} cannot be used "
                f"({exc.reason or exc}): check that both are PEM and that the key matches"
            ) from exc


@contextlib.contextmanager
def _private_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[Path, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="recorder-tls-"))  # mode 0700
    try:
        cert_file, key_file = directory / "client.crt", directory / "client.key"
        for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        yield cert_file, key_file
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc

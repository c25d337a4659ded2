"""What the recorder presents to the API server, kept fresh.

A ``Credentials`` object is asked before every request (``authorization()``,
``certificate()``) and told after a 401 (``refresh()``). Token files (the in-cluster service
account's bound token, a kubeconfig ``tokenFile``) and client-certificate files are read again
at most every ``reread_seconds`` and on every refresh; exec plugins are run again when their
credential expires and on refresh. So a rotated credential costs no poll: the request that got
the 401 is sent again with the new one.

Never log what these objects hold: only their ``describe`` strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from recorder.errors import CredentialsError
from recorder.kube.exec_plugin import ExecPlugin
from recorder.kube.tls import ClientCertificate

log = logging.getLogger(__name__)

REREAD_SECONDS = 60.0
"""How often a token or certificate file is read again (client-go uses one minute too)."""


class TokenSource:
    """A bearer token that may change: ``current()`` and, after a 401, ``refresh()``."""

    describe = "a token"
    refreshable = False

    def current(self) -> str:
        raise NotImplementedError

    def refresh(self) -> bool:
        """Look again; True when the token changed."""
        return False


class StaticToken(TokenSource):
    def __init__(self, token: str, describe: str) -> None:
        self._token = token
        self.describe = describe

    def current(self) -> str:
        return self._token


class FileToken(TokenSource):
    """A token file read again every ``reread_seconds`` and on ``refresh()``.

    A read that fails or finds the file empty (a rotation caught half-way) keeps the last good
    token and logs a warning; only the first read must succeed.
    """

    refreshable = True

    def __init__(
        self,
        path: Path,
        describe: str,
        *,
        reread_seconds: float = REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        fallback: str | None = None,
    ) -> None:
        self.path = path
        self.describe = describe
        self._reread = reread_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._token = fallback
        self._read_at = clock()
        fresh = self._read()
        if fresh is None and self._token is None:
            raise CredentialsError(
                f"cannot read the token file {path} ({describe}); check that it exists and is "
                "readable by the recorder's user"
            )
        if fresh is not None:
            self._token = fresh

    def _read(self) -> str | None:
        try:
            text = self.path.read_text().strip()
        except OSError as exc:
            log.warning("cannot read the token file %s: %s", self.path, exc.strerror or exc)
            return None
        if not text:
            log.warning("the token file %s is empty; keeping the previous token", self.path)
            return None
        return text

    def current(self) -> str:
        with self._lock:
            if self._clock() - self._read_at >= self._reread:
                self._reload()
            assert self._token is not None
            return self._token

    def refresh(self) -> bool:
        with self._lock:
            before = self._token
            self._reload()
            return self._token != before

    def _reload(self) -> None:
        self._read_at = self._clock()
        fresh = self._read()
        if fresh is not None:
            self._token = fresh


class CertificateSource:
    """A client certificate that may change, like ``TokenSource``."""

    refreshable = False

    def current(self) -> ClientCertificate:
        raise NotImplementedError

    def refresh(self) -> bool:
        return False


class StaticCertificate(CertificateSource):
    def __init__(self, certificate: ClientCertificate) -> None:
        self._certificate = certificate

    def current(self) -> ClientCertificate:
        return self._certificate


class FileCertificate(CertificateSource):
    """``client-certificate`` and ``client-key`` files, read again like a token file.

    The same ``ClientCertificate`` object is returned while the files do not change, so the
    client rebuilds its TLS context only after a real rotation.
    """

    refreshable = True

    def __init__(
        self,
        cert_path: Path,
        key_path: Path,
        describe: str,
        *,
        reread_seconds: float = REREAD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = (cert_path, key_path)
        self._describe = describe
        self._reread = reread_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at = clock()
        first = self._read()
        if first is None:
            raise CredentialsError(
                f"cannot read the client certificate {cert_path} or key {key_path} ({describe})"
            )
        self._certificate = first

    def _read(self) -> ClientCertificate | None:
        try:
            cert, key = (p.read_bytes() for p in self._paths)
        except OSError as exc:
            log.warning("cannot read client certificate files: %s", exc.strerror or exc)
            return None
        return ClientCertificate(cert, key, self._describe) if cert and key else None

    def current(self) -> ClientCertificate:
        with self._lock:
            if self._clock() - self._read_at >= self._reread:
                self._reload()
            return self._certificate

    def refresh(self) -> bool:
        with self._lock:
            return self._reload()

    def _reload(self) -> bool:
        self._read_at = self._clock()
        fresh = self._read()
        if fresh is None or fresh == self._certificate:
            return False
        self._certificate = fresh
        return True


class Credentials:
    """Everything one identity presents: a bearer token, basic auth, a client certificate, or
    an exec plugin that supplies either (kubectl uses the plugin only when none of the others
    is configured)."""

    def __init__(
        self,
        *,
        token: TokenSource | None = None,
        certificate: CertificateSource | None = None,
        basic: tuple[str, str] | None = None,
        exec_plugin: ExecPlugin | None = None,
        impersonate: tuple[str, tuple[str, ...]] | None = None,
        name: str | None = None,
    ) -> None:
        self._token = token
        self._certificate = certificate
        self._basic = basic
        self._exec = exec_plugin
        self._impersonate = impersonate
        self.name = name
        """Who these credentials belong to in the configuration (kubeconfig user, ...)."""

    @property
    def uses_exec(self) -> bool:
        return self._exec is not None

    @property
    def refreshable(self) -> bool:
        """Whether ``refresh()`` can ever produce something new (file or plugin based)."""
        return bool(
            self._exec is not None
            or (self._token and self._token.refreshable)
            or (self._certificate and self._certificate.refreshable)
        )

    def headers(self) -> list[tuple[str, str]]:
        """Headers for the next request; may read a token file or run the exec plugin."""
        out: list[tuple[str, str]] = []
        token = self._current_token()
        if token:
            out.append(("Authorization", f"Bearer {token}"))
        elif self._basic is not None:
            pair = f"{self._basic[0]}:{self._basic[1]}".encode()
            out.append(("Authorization", f"Basic {base64.b64encode(pair).decode()}"))
        if self._impersonate is not None:
            user, groups = self._impersonate
            out.append(("Impersonate-User", user))
            out.extend(("Impersonate-Group", group) for group in groups)
        return out

    def certificate(self) -> ClientCertificate | None:
        if self._certificate is not None:
            return self._certificate.current()
        if self._exec is not None:
            return self._exec.credential().certificate
        return None

    def refresh(self) -> bool:
        """After a 401: look for a newer credential; True when something changed."""
        changed = False
        if self._token is not None:
            changed |= self._token.refresh()
        if self._certificate is not None:
            changed |= self._certificate.refresh()
        if self._exec is not None:
            changed |= self._exec.refresh()
        return changed

    def _current_token(self) -> str | None:
        if self._token is not None:
            return self._token.current()
        if self._exec is not None:
            return self._exec.credential().token
        return None

    def identity(self) -> str | None:
        """Who the API server will see, best effort, for error messages (never a secret).

        A service-account token names its account in its ``sub`` claim; a client certificate's
        CN is the user and its O entries the groups; otherwise the configured name.
        """
        if self._impersonate is not None:
            return f'user "{self._impersonate[0]}" (impersonated)'
        try:
            token = self._current_token()
            certificate = self.certificate()
        except CredentialsError:
            token, certificate = None, None
        if token:
            subject = jwt_subject(token)
            if subject:
                return f'user "{subject}"'
        if certificate is not None:
            subject = certificate_subject(certificate.cert_pem)
            if subject:
                return subject
        return self.name


def jwt_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT, read without verifying it (only to name the identity)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) else None


def certificate_subject(cert_pem: bytes) -> str | None:
    """``user "CN" (groups O1, O2)`` from a PEM certificate, as Kubernetes maps it."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    groups = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    text = f'user "{names[0].value!s}"'
    return f"{text} (groups {', '.join(groups)})" if groups else text

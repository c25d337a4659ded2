"""Authentication and RBAC-like authorization for the simulator, as ASGI middleware.

Like the API server: a request without acceptable credentials gets a 401 ``Status``; an
authenticated identity may always read discovery, and reads metrics (and the cluster objects
of `core`, the namespaces themselves included) cluster-wide unless it is *namespaced*, in
which case anything outside its namespaces, and every cluster-scoped read (a namespace's
``GET`` too, as RBAC has it), is a 403 whose message has the API server's wording.
Identities come from bearer tokens (fixed or rotating) and client certificates (CN is the
user, O the groups, verified against the simulator's CA by the TLS layer).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.simulator import wire

__all__ = ["AccessControl", "AccessMiddleware", "Identity", "RotatingToken"]

logger = logging.getLogger(__name__)

METRICS_GROUP = wire.GROUP
_GROUPS = frozenset({METRICS_GROUP, "apps", "batch", "autoscaling"})
"""Groups whose resources are authorized (discovery of them is always allowed)."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ("system:authenticated",)
    namespaces: frozenset[str] | None = None
    """None: may read everywhere; else only pods in these namespaces."""
    resources: frozenset[str] | None = None
    """None: may read every resource; else only these ``<group>/<resource>`` (``/pods`` for
    the core group), e.g. the Metrics API only, as a recorder without the cluster-objects RBAC."""


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    group: str
    resource: str
    verb: str
    namespace: str | None
    name: str | None


def resource_request(method: str, path: str) -> ResourceRequest | None:
    """What a path asks for, or None for discovery and other non-resource paths."""
    parts = [p for p in path.split("/") if p]
    match parts:
        case ["apis", group, _version, *rest] if group in _GROUPS:
            pass
        case ["api", "v1", *rest]:
            group = ""
        case _:
            return None
    verb = "get" if method in ("GET", "HEAD") else method.lower()
    match rest:
        case ["namespaces"]:  # the namespaces themselves, cluster-scoped
            return ResourceRequest(
                group, "namespaces", "list" if verb == "get" else verb, None, None
            )
        case ["namespaces", name]:
            return ResourceRequest(group, "namespaces", verb, None, name)
        case [resource] if resource != "namespaces":
            return ResourceRequest(group, resource, "list" if verb == "get" else verb, None, None)
        case [resource, name] if resource != "namespaces":
            return ResourceRequest(group, resource, verb, None, name)
        case ["namespaces", namespace, resource]:
            return ResourceRequest(
                group, resource, "list" if verb == "get" else verb, namespace, None
            )
        case ["namespaces", namespace, resource, name]:
            return ResourceRequest(group, resource, verb, namespace, name)
        case _:
            return None


class RotatingToken:
    """A bearer token replaced by ``rotate()``: only the current one is accepted.

    With a ``file``, the new token is written there (atomically, mode 0600) *before* it becomes
    the only valid one, as the kubelet refreshes a projected service-account token.
    """

    def __init__(self, identity: Identity, file: Path | None = None) -> None:
        self.identity = identity
        self.file = file
        self._lock = threading.Lock()
        self._token = ""
        self.rotations = 0
        self.rotate()
        self.rotations = 0

    @property
    def current(self) -> str:
        with self._lock:
            return self._token

    def rotate(self) -> str:
        token = secrets.token_urlsafe(32)
        if self.file is not None:
            _write_private(self.file, token + "\n")
        with self._lock:
            self._token = token
            self.rotations += 1
        return token

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.current.encode())


def _write_private(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class AccessControl:
    """Who may do what. Thread-safe; change it while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, Identity] = {}
        self._rotating: list[RotatingToken] = []
        self._certificate_users: dict[str, Identity] = {}
        self.denials = 0
        self.rejections = 0

    def add_token(self, identity: Identity, token: str | None = None) -> str:
        token = token or secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = identity
        return token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def add_rotating_token(self, identity: Identity, file: Path | None = None) -> RotatingToken:
        rotating = RotatingToken(identity, file)
        with self._lock:
            self._rotating.append(rotating)
        return rotating

    def add_certificate_user(self, identity: Identity) -> None:
        """Accept client certificates whose CN is ``identity.user`` (signed by the CA)."""
        with self._lock:
            self._certificate_users[identity.user] = identity

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]], tls: Any) -> Identity | None:
        for key, value in headers:
            if key.lower() == b"authorization":
                scheme, _, presented = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    return None
                return self._by_token(presented.strip())
        return self._by_certificate(tls)

    def _by_token(self, presented: str) -> Identity | None:
        with self._lock:
            tokens = list(self._tokens.items())
            rotating = list(self._rotating)
        for token, identity in tokens:
            if hmac.compare_digest(presented.encode(), token.encode()):
                return identity
        for candidate in rotating:
            if candidate.matches(presented):
                return candidate.identity
        return None

    def _by_certificate(self, tls: Any) -> Identity | None:
        chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
        if not chain:
            return None
        from recorder.simulator.tls import subject_of

        subject = subject_of(chain[0].encode())
        if subject is None:
            return None
        with self._lock:
            known = self._certificate_users.get(subject[0])
        if known is None:
            return None
        return Identity(subject[0], (*subject[1], "system:authenticated"), known.namespaces)

    def forbidden(self, identity: Identity, request: ResourceRequest) -> str | None:
        """The API server's 403 message when ``identity`` may not do ``request``, else None."""
        allowed = identity.resources
        if allowed is not None and f"{request.group}/{request.resource}" not in allowed:
            pass  # a resource it has no rule for, in any scope
        elif identity.namespaces is None:
            return None
        elif request.namespace is not None and request.namespace in identity.namespaces:
            return None
        subject = f"{request.resource}.{request.group}" if request.group else request.resource
        named = f' "{request.name}"' if request.name else ""
        scope = (
            f'in the namespace "{request.namespace}"'
            if request.namespace is not None
            else "at the cluster scope"
        )
        return (
            f'{subject}{named} is forbidden: User "{identity.user}" cannot {request.verb} '
            f'resource "{request.resource}" in API group "{request.group}" {scope}'
        )


def _status_response(code: int, body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    start = {
        "type": "http.response.start",
        "status": code,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache, private"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class AccessMiddleware:
    """ASGI middleware applying an `AccessControl` to every HTTP request."""

    def __init__(self, app: ASGIApp, control: AccessControl) -> None:
        self._app = app
        self._control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        control = self._control
        tls = (scope.get("extensions") or {}).get("tls")
        identity = control.authenticate(scope["headers"], tls)
        if identity is None:
            control.rejections += 1
            body = wire.status(401, "Unauthorized", "Unauthorized")
            for message in _status_response(401, body):
                await send(message)
            return
        request = resource_request(scope["method"], scope["path"])
        denial = control.forbidden(identity, request) if request is not None else None
        if denial is not None and request is not None:
            control.denials += 1
            details = wire.StatusDetails(
                name=request.name or "", group=request.group, kind=request.resource
            )
            body = wire.status(403, "Forbidden", denial, details)
            for message in _status_response(403, body):
                await send(message)
            return
        await self._app(scope, receive, send)

"""TokenReview and SubjectAccessReview for the simulator, driven by a small ``ReviewPolicy``,
so a recorder in ``--auth kubernetes`` mode can be tested against it.

``POST /apis/authentication.k8s.io/v1/tokenreviews`` finds the user of ``spec.token``;
``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` allows ``get``/``list`` of
``metrics.k8s.io`` pods in the user's namespaces (any namespace, and cluster-wide questions,
for a cluster-wide user) and ``get`` of its non-resource URLs. The policy, as a JSON file
(``recorder simulate --review-policy FILE``)::

    {"tokens": {"<token>": "alice"},
     "users": {"alice": {"namespaces": ["team-a"], "clusterWide": false,
                         "nonResourceURLs": ["/metrics"]}}}

``available = False`` makes both endpoints answer 503 (an API server in trouble).
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.errors import ConfigError
from recorder.simulator import wire

__all__ = ["ReviewMiddleware", "ReviewPolicy", "ReviewUser"]

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReviewUser:
    """What one user may read."""

    namespaces: frozenset[str] = frozenset()
    cluster_wide: bool = False
    non_resource_urls: frozenset[str] = frozenset()
    groups: tuple[str, ...] = ("system:authenticated",)

    def allows(self, attributes: Mapping[str, Any]) -> bool:
        non_resource = attributes.get("nonResourceAttributes")
        if isinstance(non_resource, dict):
            return non_resource.get("verb") == "get" and (
                non_resource.get("path") in self.non_resource_urls
            )
        resource = attributes.get("resourceAttributes")
        if not isinstance(resource, dict):
            return False
        if (resource.get("group"), resource.get("resource")) != (wire.GROUP, "pods"):
            return False
        if resource.get("verb") not in ("get", "list"):
            return False
        return self.cluster_wide or resource.get("namespace") in self.namespaces


@dataclass
class ReviewPolicy:
    """Tokens to users, users to rules; thread-safe counters of the reviews answered."""

    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, ReviewUser] = field(default_factory=dict)
    available: bool = True
    token_reviews: int = 0
    access_reviews: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, token: str, user: str, rules: ReviewUser) -> None:
        with self._lock:
            self.tokens[token] = user
            self.users[user] = rules

    @classmethod
    def from_json(cls, text: str, source: str = "the review policy") -> ReviewPolicy:
        try:
            data = json.loads(text)
            tokens = {str(k): str(v) for k, v in dict(data.get("tokens", {})).items()}
            users = {
                str(name): ReviewUser(
                    frozenset(map(str, rules.get("namespaces", ()))),
                    bool(rules.get("clusterWide", False)),
                    frozenset(map(str, rules.get("nonResourceURLs", ()))),
                )
                for name, rules in dict(data.get("users", {})).items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{source} is not a review policy ({exc}); see recorder.simulator.reviews"
            ) from None
        return cls(tokens, users)

    @classmethod
    def from_file(cls, path: Path) -> ReviewPolicy:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read --review-policy {path}: {exc.strerror}") from None
        return cls.from_json(text, str(path))

    def user_of(self, token: str) -> str | None:
        with self._lock:
            self.token_reviews += 1
            found = None
            for known, user in self.tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    found = user
            return found

    def review_access(self, spec: Mapping[str, Any]) -> bool:
        with self._lock:
            self.access_reviews += 1
            rules = self.users.get(str(spec.get("user", "")))
        return rules is not None and rules.allows(spec)

    def answer(self, path: str, review: Mapping[str, Any]) -> dict[str, Any]:
        spec = review.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        if path == TOKEN_REVIEWS:
            user = self.user_of(str(spec.get("token", "")))
            status: dict[str, Any] = {"authenticated": user is not None}
            if user is not None:
                groups = self.users.get(user, ReviewUser()).groups
                status["user"] = {"username": user, "uid": f"uid-{user}", "groups": list(groups)}
            kind, version = "TokenReview", "authentication.k8s.io/v1"
        else:
            allowed = self.review_access(spec)
            status = {"allowed": allowed} | ({} if allowed else {"reason": "no rule allows it"})
            kind, version = "SubjectAccessReview", "authorization.k8s.io/v1"
        return {"kind": kind, "apiVersion": version, "metadata": {}, "spec": {}, "status": status}


class ReviewMiddleware:
    """Answers the two review endpoints from ``policy``; everything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, policy: ReviewPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")).rstrip("/")
        if scope["type"] != "http" or path not in (TOKEN_REVIEWS, ACCESS_REVIEWS):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _send(send, 405, wire.method_not_allowed())
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > MAX_BODY_BYTES:
                await _send(send, 413, wire.status(413, "RequestEntityTooLarge", "too large"))
                return
        if not self.policy.available:
            await _send(
                send, 503, wire.status(503, "ServiceUnavailable", "the reviews are unavailable")
            )
            return
        try:
            review = json.loads(body)
        except ValueError:
            review = None
        if not isinstance(review, dict):
            await _send(send, 400, wire.bad_request("the body is not a review"))
            return
        await _send(send, 201, json.dumps(self.policy.answer(path, review)).encode())


async def _send(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

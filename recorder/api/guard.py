"""The access guard: every HTTP request passes it, so a route added later is guarded too.

For a path outside ``OPEN_PATHS`` (the probes, the OpenAPI document, the docs and history
pages and their assets, which hold no data), in this order:

1. the caller's bearer token is authenticated (``--auth none``: everyone is anonymous);
2. the client (its identity, else its address) is counted against the rate limit: 429 with
   ``Retry-After`` beyond it (an address over its rate, which 401s count against, gets 429
   before its token is even reviewed, unless the token is known already: random tokens cannot
   make the recorder flood the API server with TokenReviews);
3. no or an unknown token: 401 with ``WWW-Authenticate: Bearer``;
4. ``/metrics`` needs ``get`` on the non-resource URL ``/metrics``; a route that takes
   ``visibility`` decides per namespace itself; any other route (and any unknown path) needs
   cluster-wide access: else 403 (see ``AccessGuard`` for where each is decided);
5. the request goes on, with a ``Grant`` in its scope for ``visibility``.

When access cannot be decided (the API server does not answer a review) the answer is 503.
Every denial is counted in ``recorder_auth_denials_total{reason}``. The token is never logged
nor echoed.
"""

from __future__ import annotations

import logging

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorder.api.access import CLUSTER, METRICS, Authorizer, Caller, KnownNamespaces, Question
from recorder.api.errors import error_response
from recorder.api.limits import LogLimiter
from recorder.api.pages import ASSET_PATHS, PAGE_PATHS
from recorder.api.ratelimit import RateLimiter
from recorder.api.visibility import (
    DECIDED_KEY,
    GRANT_KEY,
    Grant,
    Visibility,
    namespace_aware,
)
from recorder.errors import AccessReviewError

__all__ = ["DENIAL_REASONS", "OPEN_PATHS", "AccessGuard", "Denials", "authorize"]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/livez", "/readyz", "/openapi.json"}) | PAGE_PATHS | ASSET_PATHS
"""Answered without credentials: the probes (the kubelet sends none), the API's description and
the pages (``pages``: the history page, the docs pages and each file they load, by its exact
path). None holds data: ``/docs`` loads the OpenAPI document, and its Authorize button takes a
token; the history page's data calls carry the token the user gives it."""
METRICS_PATH = "/metrics"
DENIAL_REASONS = ("unauthenticated", "forbidden", "review_error", "rate_limited")


class Denials:
    """``recorder_auth_denials_total{reason}`` in ``registry`` (none without one)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._counter: Counter | None = None
        if registry is not None:
            self._counter = Counter(
                "recorder_auth_denials_total",
                "HTTP requests refused by access control, by reason: unauthenticated (401: no "
                "or an unknown token), forbidden (403), review_error (503: the API server did "
                "not answer a TokenReview or SubjectAccessReview), rate_limited (429)",
                ["reason"],
                registry=registry,
            )
            for reason in DENIAL_REASONS:
                self._counter.labels(reason)

    def count(self, reason: str) -> None:
        if self._counter is not None:
            self._counter.labels(reason).inc()


def bearer_token(scope: Scope) -> str | None:
    """The request's bearer token, or None."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _address_key(scope: Scope) -> str:
    return f"address:{client_address(scope)}"


class AccessGuard:
    """ASGI middleware applying ``authorizer`` to every request but ``OPEN_PATHS``.

    Authorization happens in one of three places, the first that applies: here for
    ``/metrics``; in ``authorize`` (the app's own dependency, run before any FastAPI route's
    handler) for a FastAPI route; and, for anything else (a plain Starlette route, a mount, a
    path no route knows), here again when its answer starts: unless the request was decided
    by then, it needs cluster-wide access and is answered 403 instead.
    ``known`` lists the history's namespaces for ``visibility``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authorizer: Authorizer,
        known: KnownNamespaces,
        limiter: RateLimiter | None = None,
        denials: Denials | None = None,
    ) -> None:
        self.app = app
        self.authorizer = authorizer
        self.known = known
        self.limiter = limiter
        self.denials = denials or Denials(None)
        self._logs = LogLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        answer: Response | None
        caller: Caller | None = None
        try:
            if self._reviews_spent(scope, token):
                caller, answer = None, self._limited(scope, None)
            else:
                caller = await self.authorizer.authenticate(token)
                answer = self._limited(scope, caller)
            if answer is None and caller is not None and scope["path"] == METRICS_PATH:
                answer = await self._refusal(caller, METRICS)
                scope[DECIDED_KEY] = True
        except AccessReviewError as exc:
            answer = self._undecided(exc)
        if answer is not None or caller is None:
            await (answer or self._unauthenticated(token))(scope, receive, send)
            return
        scope[GRANT_KEY] = Grant(caller, self.authorizer, self.known)
        await self.app(scope, receive, self._decided_send(scope, receive, send, caller))

    def _reviews_spent(self, scope: Scope, token: str | None) -> bool:
        """A client whose address is over its rate (401s count against the address) sending a
        token that would need a review: refused without one."""
        return (
            self.limiter is not None
            and token is not None
            and self.limiter.exhausted(_address_key(scope))
            and self.authorizer.costly(token)
        )

    def _unauthenticated(self, token: str | None) -> Response:
        self.denials.count("unauthenticated")
        what = "no bearer token was sent" if token is None else "the token is not valid"
        return error_response(
            401,
            "unauthorized",
            f"{what}: send Authorization: Bearer <token> (see README, Access control)",
            {"WWW-Authenticate": 'Bearer realm="kube-metrics-recorder"'},
        )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No route speaks WebSocket today; one added later needs a token allowed
        cluster-wide, or the connection is closed (1008, policy violation)."""
        caller: Caller | None = None
        try:
            caller = await self.authorizer.authenticate(bearer_token(scope))
            allowed = caller is not None and await self.authorizer.allows(caller, CLUSTER)
        except AccessReviewError:
            allowed = False
        if not allowed:
            self.denials.count("forbidden" if caller is not None else "unauthenticated")
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    def _decided_send(self, scope: Scope, receive: Receive, send: Send, caller: Caller) -> Send:
        """``send``, refusing the answer of a request nobody decided on that the caller may
        not read cluster-wide."""
        refused = False

        async def checked(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start" and not scope.get(DECIDED_KEY):
                scope[DECIDED_KEY] = True
                try:
                    refusal = await self._refusal(caller, CLUSTER)
                except AccessReviewError as exc:
                    refusal = self._undecided(exc)
                if refusal is not None:
                    refused = True
                    await refusal(scope, receive, send)
                    return
            await send(message)

        return checked

    def _undecided(self, exc: AccessReviewError) -> Response:
        self.denials.count("review_error")
        if self._logs.allow("review") is not None:
            log.warning("access could not be decided: %s", exc)
        return error_response(
            503, "unavailable", f"access control cannot decide now: {exc}", {"Retry-After": "5"}
        )

    def _limited(self, scope: Scope, caller: Caller | None) -> Response | None:
        if self.limiter is None:
            return None
        client = f"user:{caller.name}" if caller and caller.authenticated else None
        wait = self.limiter.take(client or _address_key(scope))
        if wait is None:
            return None
        self.denials.count("rate_limited")
        return error_response(
            429,
            "rate_limited",
            f"too many requests from this client (at most {self.limiter.rate:g} a second, "
            f"{self.limiter.burst} at once); try again in {wait}s",
            {"Retry-After": str(wait)},
        )

    async def _refusal(self, caller: Caller, question: Question) -> Response | None:
        if await self.authorizer.allows(caller, question):
            return None
        self.denials.count("forbidden")
        need = (
            "get on the non-resource URL /metrics"
            if question is METRICS
            else "get on pods.metrics.k8s.io cluster-wide"
        )
        return error_response(
            403, "forbidden", f"{caller.name} may not read {question.describe()}: that needs {need}"
        )


async def authorize(request: Request) -> None:
    """The app's dependency, run before every FastAPI route's handler: a route that takes
    ``visibility`` decides by namespace itself; any other needs cluster-wide access."""
    grant = request.scope.get(GRANT_KEY)
    if not isinstance(grant, Grant) or request.scope.get(DECIDED_KEY):
        return  # an open path (the guard let it by), or /metrics (decided already)
    route = request.scope.get("route")
    if not (isinstance(route, BaseRoute) and namespace_aware(route)):
        await Visibility(grant).cluster()
    request.scope[DECIDED_KEY] = True

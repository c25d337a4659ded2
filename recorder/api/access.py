"""Who asks and what they may read: the vocabulary of access control, shared by the guard
(``guard``), the routes (``visibility``) and the ways of deciding (``tokens``,
``kubernetes_access``, and ``OpenAccess`` here for ``--auth none``).

A ``Caller`` is an authenticated identity. A ``Question`` is one thing it may or may not read:
one namespace's pods, everything (every namespace and the nodes: "cluster-wide"), or the
``/metrics`` exposition. An ``Authorizer`` answers both: who a bearer token is, and whether a
caller may read a question's data; it raises ``AccessReviewError`` when it cannot tell (the
request is then answered 503, never allowed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "ANONYMOUS",
    "CLUSTER",
    "METRICS",
    "AuthMode",
    "Authorizer",
    "Caller",
    "KnownNamespaces",
    "OpenAccess",
    "Question",
    "Scope",
]


class AuthMode(StrEnum):
    NONE = "none"
    TOKENS = "tokens"
    KUBERNETES = "kubernetes"


class Scope(StrEnum):
    NAMESPACE = "namespace"
    CLUSTER = "cluster"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Question:
    """What a caller wants to read: ``namespace``'s pods, everything, or ``/metrics``."""

    scope: Scope
    namespace: str | None = None

    @classmethod
    def of_namespace(cls, namespace: str) -> Question:
        return cls(Scope.NAMESPACE, namespace)

    def describe(self) -> str:
        if self.scope is Scope.NAMESPACE:
            return f"namespace {self.namespace}"
        if self.scope is Scope.METRICS:
            return "/metrics"
        return "every namespace and the nodes (cluster-wide)"


CLUSTER = Question(Scope.CLUSTER)
METRICS = Question(Scope.METRICS)


@dataclass(frozen=True, slots=True)
class Caller:
    """An identity: a Kubernetes user (name, uid, groups, extra, as a TokenReview returned
    them, for the SubjectAccessReviews), a static token's name, or ``ANONYMOUS``."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    authenticated: bool = True
    """False only for ``ANONYMOUS`` (``--auth none``): the rate limit then counts the client's
    address, not its name."""


ANONYMOUS = Caller("anonymous", authenticated=False)

KnownNamespaces = Callable[[], Awaitable[Sequence[str]]]
"""The namespaces the history holds, asked only when a caller's readable ones must be found
among them (Kubernetes mode)."""


class Authorizer(Protocol):
    """One way of deciding; ``mode`` names it."""

    mode: AuthMode

    async def authenticate(self, token: str | None) -> Caller | None:
        """Who presents ``token`` (``None``: none was sent), or ``None`` when nobody does."""
        ...

    async def allows(self, caller: Caller, question: Question) -> bool: ...

    async def readable(self, caller: Caller, known: KnownNamespaces) -> frozenset[str]:
        """The namespaces ``caller`` may read, for a caller without cluster-wide access."""
        ...

    def costly(self, token: str) -> bool:
        """Whether authenticating ``token`` would ask someone else (a TokenReview not
        answered from the cache): the guard refuses that to a client already over its rate."""
        ...


class OpenAccess:
    """``--auth none``: everyone is ``ANONYMOUS`` and may read everything."""

    mode = AuthMode.NONE

    async def authenticate(self, token: str | None) -> Caller | None:
        return ANONYMOUS

    async def allows(self, caller: Caller, question: Question) -> bool:
        return True

    async def readable(self, caller: Caller, known: KnownNamespaces) -> frozenset[str]:
        return frozenset(await known())

    def costly(self, token: str) -> bool:
        return False

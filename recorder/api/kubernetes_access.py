"""``--auth kubernetes``: the caller's bearer token checked with a TokenReview, what it asks
for with SubjectAccessReviews, as kube-rbac-proxy and the API server's aggregation layer do.

- a namespace's history needs ``get`` on ``pods`` of ``metrics.k8s.io`` in that namespace (what
  ``kubectl top pod -n NS`` needs);
- node data and questions over every namespace need the same permission cluster-wide (a
  SubjectAccessReview without a namespace: a ClusterRoleBinding);
- ``/metrics`` needs ``get`` on the non-resource URL ``/metrics``.

Answers are cached per token (by its SHA-256, never the token itself) and per user and
question: allowed answers for ``cache_seconds``, denials and unknown tokens for a sixth of it,
so a new RoleBinding is seen within seconds. Reviews in flight are bounded
(``max_concurrent_reviews``) and each one by the client's deadline; a client over its rate limit
gets no TokenReview for a token the cache does not know (``costly``), so random tokens cannot
turn the recorder into a flood of reviews.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable

from recorder.api.access import (
    AuthMode,
    Caller,
    KnownNamespaces,
    Question,
    Scope,
)
from recorder.api.decisions import DecisionCache
from recorder.kube.reviews import ReviewClient, ReviewedUser

__all__ = ["KubernetesAccess"]

METRICS_PATH = "/metrics"


class KubernetesAccess:
    mode = AuthMode.KUBERNETES

    def __init__(
        self,
        client: ReviewClient,
        *,
        cache_seconds: float = 30.0,
        max_concurrent_reviews: int = 16,
        max_entries: int = 10_000,
    ) -> None:
        self.client = client
        deny_seconds = max(cache_seconds / 6, 0.5)
        self._users: DecisionCache[Caller | None] = DecisionCache(
            lambda caller: cache_seconds if caller is not None else deny_seconds,
            max_entries=max_entries,
        )
        self._decisions: DecisionCache[bool] = DecisionCache(
            lambda allowed: cache_seconds if allowed else deny_seconds, max_entries=max_entries
        )
        self._reviews = asyncio.Semaphore(max_concurrent_reviews)

    def costly(self, token: str) -> bool:
        return self._users.peek(_digest(token)) is None

    async def authenticate(self, token: str | None) -> Caller | None:
        if not token:
            return None
        digest = _digest(token)

        async def review() -> Caller | None:
            async with self._reviews:
                user = await self.client.token_review(token)
            if user is None:
                return None
            return Caller(user.username, user.uid, user.groups, user.extra)

        return await self._users.get(digest, review)

    async def allows(self, caller: Caller, question: Question) -> bool:
        if not caller.authenticated:
            return False
        user = ReviewedUser(caller.name, caller.uid, caller.groups, caller.extra)

        async def review() -> bool:
            async with self._reviews:
                if question.scope is Scope.METRICS:
                    return await self.client.access_review(user, non_resource_path=METRICS_PATH)
                return await self.client.access_review(user, namespace=question.namespace)

        return await self._decisions.get((caller, question), review)

    async def readable(self, caller: Caller, known: KnownNamespaces) -> frozenset[str]:
        namespaces = list(await known())
        answers = await asyncio.gather(*(self._namespace(caller, ns) for ns in namespaces))
        return frozenset(_allowed(namespaces, answers))

    async def _namespace(self, caller: Caller, namespace: str) -> bool:
        return await self.allows(caller, Question.of_namespace(namespace))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _allowed(namespaces: Iterable[str], answers: Iterable[bool]) -> list[str]:
    return [ns for ns, allowed in zip(namespaces, answers, strict=True) if allowed]

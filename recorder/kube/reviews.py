"""TokenReview and SubjectAccessReview calls to the API server, with the recorder's own
credentials (the service account's token and CA, or the kubeconfig's).

``ReviewClient.token_review(token)`` says who a bearer token belongs to (``ReviewedUser``) or
``None``; ``ReviewClient.access_review(user, ...)`` whether that user may ``get`` pods of
``metrics.k8s.io`` in a namespace (or in every namespace), or ``get`` a non-resource path such
as ``/metrics``. Both need the recorder's service account bound to ``system:auth-delegator``.

Every call is bounded by ``timeout_seconds`` as a whole, and its body by ``MAX_BODY_BYTES``.
Whatever goes wrong (unreachable, slow, a 401/403 of our own credentials, a 5xx, a body that
is not a review) is an ``AccessReviewError`` whose message says what to do; the caller's token
is never part of a message.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx

from recorder import __version__
from recorder.errors import AccessReviewError, RecorderError
from recorder.kube.config import ClusterConfig
from recorder.kube.tls import build_ssl_context

__all__ = ["METRICS_GROUP", "ReviewClient", "ReviewedUser"]

METRICS_GROUP = "metrics.k8s.io"
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
MAX_BODY_BYTES = 256 * 1024
RBAC_HINT = (
    "bind the recorder's service account to the ClusterRole system:auth-delegator "
    "(deploy/components/auth-delegator)"
)


@dataclass(frozen=True, slots=True)
class ReviewedUser:
    """The user a TokenReview found, as a SubjectAccessReview takes it."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class ReviewClient:
    """Asks the API server of ``config`` for reviews (one HTTP connection pool, async)."""

    def __init__(self, config: ClusterConfig, *, timeout_seconds: float = 5.0) -> None:
        self.config = config
        self.timeout_seconds = timeout_seconds
        self._http: httpx.AsyncClient | None = None
        self._verify: ssl.SSLContext | None = None
        if config.server.startswith("https://"):
            certificate = config.credentials.certificate() if config.credentials else None
            self._verify = build_ssl_context(config.tls, certificate)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def token_review(self, token: str) -> ReviewedUser | None:
        answer = await self._post(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
            "a TokenReview",
        )
        status = _mapping(answer.get("status"))
        if status.get("authenticated") is not True:
            return None
        user = _mapping(status.get("user"))
        name = user.get("username")
        if not isinstance(name, str) or not name:
            return None
        extra = _mapping(user.get("extra"))
        return ReviewedUser(
            name,
            str(user.get("uid") or ""),
            tuple(g for g in _sequence(user.get("groups")) if isinstance(g, str)),
            tuple(
                (str(key), tuple(str(v) for v in _sequence(values)))
                for key, values in sorted(extra.items())
            ),
        )

    async def access_review(
        self,
        user: ReviewedUser,
        *,
        namespace: str | None = None,
        non_resource_path: str | None = None,
    ) -> bool:
        """Whether ``user`` may ``get`` pods of ``metrics.k8s.io`` in ``namespace`` (``None``:
        in every namespace), or ``get`` ``non_resource_path`` when given."""
        attributes: dict[str, Any]
        if non_resource_path is not None:
            attributes = {"nonResourceAttributes": {"path": non_resource_path, "verb": "get"}}
        else:
            resource: dict[str, str] = {"group": METRICS_GROUP, "resource": "pods", "verb": "get"}
            if namespace is not None:
                resource["namespace"] = namespace
            attributes = {"resourceAttributes": resource}
        spec: dict[str, Any] = {"user": user.username, "groups": list(user.groups), **attributes}
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {key: list(values) for key, values in user.extra}
        answer = await self._post(
            ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": spec,
            },
            "a SubjectAccessReview",
        )
        return _mapping(answer.get("status")).get("allowed") is True

    async def _post(self, path: str, body: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        try:
            return await asyncio.wait_for(self._exchange(path, body, what), self.timeout_seconds)
        except TimeoutError:
            raise AccessReviewError(
                f"no answer to {what} from the Kubernetes API at {self.config.server} within "
                f"{self.timeout_seconds:g}s; is the API server reachable from the recorder?"
            ) from None

    async def _exchange(self, path: str, body: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        reply = await self._send(path, body, what)
        credentials = self.config.credentials
        if reply.status_code == 401 and credentials is not None:
            # a rotated service-account token: read it again and retry once, as the poller does
            if await anyio.to_thread.run_sync(credentials.refresh):
                reply = await self._send(path, body, what)
        if reply.status_code in (401, 403):
            raise AccessReviewError(
                f"the Kubernetes API refused {what} to the recorder ({reply.status_code}): "
                f"{RBAC_HINT}"
            )
        if reply.status_code >= 300 or len(reply.content) > MAX_BODY_BYTES:
            raise AccessReviewError(
                f"the Kubernetes API answered {what} with HTTP {reply.status_code}; try again later"
            )
        try:
            answer = json.loads(reply.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise AccessReviewError(f"the Kubernetes API's answer to {what} is not a review")
        return answer

    async def _send(self, path: str, body: Mapping[str, Any], what: str) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        credentials = self.config.credentials
        if credentials is not None:
            try:
                # may read a token file or run an exec plugin: not on the event loop
                headers.update(await anyio.to_thread.run_sync(credentials.headers))
            except RecorderError as exc:
                raise AccessReviewError(f"the recorder's own credentials failed: {exc}") from exc
        try:
            return await self._client().post(path, content=json.dumps(body), headers=headers)
        except httpx.HTTPError as exc:
            raise AccessReviewError(
                f"cannot reach the Kubernetes API at {self.config.server} for {what} "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.config.server,
                verify=self._verify if self._verify is not None else True,
                timeout=self.timeout_seconds,
                follow_redirects=False,
                proxy=self.config.proxy,
                trust_env=False,
                headers={
                    "Accept": "application/json",
                    "User-Agent": f"kube-metrics-recorder/{__version__}",
                },
            )
        return self._http


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else ()

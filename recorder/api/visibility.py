"""What one request's caller may see of the history: the seam between access control and the
routes that read it.

A route that answers per namespace takes the ``visibility`` dependency
(``access: Annotated[Visibility, Depends(visibility)]``); the guard sees that and lets the
route decide, so a route that does not take it needs cluster-wide access. Then:

- ``await access.namespaces(asked)``: for a request naming namespace ``asked``, nothing more
  when the caller may read it, else ``Forbidden`` (403); for a request spanning namespaces
  (``asked`` None), ``Visible(None)`` when the caller may read every namespace, else the
  namespaces it may read (``Visible.namespaces``: pass them to the query as
  ``SeriesFilter.namespaces``), or ``Forbidden`` when it may read none;
- ``await access.cluster()``: node data and other cluster-wide questions, or ``Forbidden``;
- ``Visible.headers()`` marks a filtered answer (``X-Recorder-Filtered-Namespaces``), and
  ``Visible.warning()`` says it in words (a PromQL answer's ``warnings`` entry).

The rule: **403** when the request names what the caller may not read (a namespace, a node,
``kind=node``); **filtered** when it spans namespaces and the caller may read some of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from recorder.api.access import CLUSTER, Authorizer, Caller, KnownNamespaces, Question

__all__ = [
    "FILTERED_HEADER",
    "Forbidden",
    "Grant",
    "Visibility",
    "Visible",
    "namespace_aware",
    "visibility",
]

FILTERED_HEADER = "X-Recorder-Filtered-Namespaces"
MAX_HEADER_CHARS = 4096
GRANT_KEY = "recorder.access"
DECIDED_KEY = "recorder.access.decided"
"""Set in a request's scope once its authorization was decided (by the guard, ``authorize``
or a namespace-aware route)."""


class Forbidden(Exception):
    """The caller may not read what it asked for (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class Visible:
    """The namespaces an answer covers: ``None`` for all of them (nothing was filtered)."""

    namespaces: frozenset[str] | None = None

    @property
    def filtered(self) -> bool:
        return self.namespaces is not None

    def headers(self) -> Mapping[str, str]:
        """``X-Recorder-Filtered-Namespaces: a,b`` on a filtered answer (cut at 4 KiB with
        ``,...``), none otherwise."""
        if self.namespaces is None:
            return {}
        text = ",".join(sorted(self.namespaces))
        if len(text) > MAX_HEADER_CHARS:
            text = text[: MAX_HEADER_CHARS - 4].rsplit(",", 1)[0] + ",..."
        return {FILTERED_HEADER: text}

    def warning(self) -> str | None:
        """The filter in words, for an answer that carries warnings (PromQL)."""
        if self.namespaces is None:
            return None
        count = len(self.namespaces)
        return (
            f"the answer covers only the {count} namespace{'s' if count != 1 else ''} the "
            f"caller may read ({', '.join(sorted(self.namespaces)[:10])}"
            f"{', ...' if count > 10 else ''}); sums and counts over it are partial"
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """What the guard found out about a request, for the route: who asks, who decides, where
    the history's namespaces come from, and how to count a denial."""

    caller: Caller
    authorizer: Authorizer
    known: KnownNamespaces


class Visibility:
    """One request's view of the history (see the module docstring)."""

    def __init__(self, grant: Grant) -> None:
        self.grant = grant

    @property
    def caller(self) -> Caller:
        return self.grant.caller

    async def cluster(self) -> None:
        if not await self.grant.authorizer.allows(self.caller, CLUSTER):
            raise Forbidden(
                f"{self.caller.name} may not read node data or every namespace: that needs "
                "get on pods.metrics.k8s.io cluster-wide (ask with namespace=<yours>)"
            )

    async def namespaces(self, asked: str | None = None) -> Visible:
        authorizer, caller = self.grant.authorizer, self.caller
        if await authorizer.allows(caller, CLUSTER):
            return Visible()
        if asked is not None:
            if await authorizer.allows(caller, Question.of_namespace(asked)):
                return Visible()
            raise Forbidden(
                f"{caller.name} may not read namespace {asked[:63]}: that needs get on "
                "pods.metrics.k8s.io in it"
            )
        readable = await authorizer.readable(caller, self.grant.known)
        if not readable:
            raise Forbidden(
                f"{caller.name} may read no namespace's history: that needs get on "
                "pods.metrics.k8s.io in a namespace"
            )
        return Visible(readable)


async def visibility(request: Request) -> Visibility:
    """The FastAPI dependency a namespace-aware route takes."""
    grant = request.scope.get(GRANT_KEY)
    if not isinstance(grant, Grant):
        raise RuntimeError("a namespace-aware route was reached without the access guard")
    return Visibility(grant)


def namespace_aware(route: BaseRoute) -> bool:
    """Whether ``route`` takes ``visibility`` (and so filters or refuses by namespace)."""
    return isinstance(route, APIRoute) and _depends_on_visibility(route.dependant)


def _depends_on_visibility(dependant: Dependant) -> bool:
    call: Any = dependant.call
    return call is visibility or any(_depends_on_visibility(d) for d in dependant.dependencies)

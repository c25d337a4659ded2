"""Fault injection for the simulator, as ASGI middleware: what a real metrics-server and the
network in front of it do on a bad day.

Faults hit the requests that the API server proxies to metrics-server (paths under
``/apis/metrics.k8s.io/<version>``); discovery of the group is served by the aggregator itself
and keeps working, except when the whole APIService is missing:

- ``unavailable(n)``: the next ``n`` such requests get the aggregator's 503 ``Status``;
- ``slow(seconds)``: each such request waits this long first;
- ``truncate(n)``: the next ``n`` bodies are cut in half (a proper HTTP message holding broken
  JSON, as from a proxy that gave up);
- ``malformed(n)``: the next ``n`` answers are a 200 HTML page, as from a captive proxy;
- ``missing``: metrics-server is not installed: the group is absent from ``/apis`` and every
  path under ``/apis/metrics.k8s.io`` is a 404.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recorder.simulator import wire

__all__ = ["FaultMiddleware", "FaultPlan", "Faults"]

_PREFIX = f"/apis/{wire.GROUP}"
MALFORMED_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults to arm at once (from ``recorder simulate`` flags), and re-arm on a timer."""

    unavailable: int = 0
    truncate: int = 0
    malformed: int = 0
    slow_seconds: float = 0.0
    missing: bool = False

    @property
    def any(self) -> bool:
        return bool(
            self.unavailable or self.truncate or self.malformed or self.slow_seconds or self.missing
        )


class Faults:
    """The switches. Thread-safe: tests flip them while the server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self.slow_seconds = 0.0
        self.missing = False
        self.injected: Counter[str] = Counter()
        """How many of each fault were served."""

    def unavailable(self, count: int) -> None:
        self._arm("unavailable", count)

    def truncate(self, count: int) -> None:
        self._arm("truncate", count)

    def malformed(self, count: int) -> None:
        self._arm("malformed", count)

    def slow(self, seconds: float) -> None:
        self.slow_seconds = seconds

    def apply(self, plan: FaultPlan) -> None:
        self.unavailable(plan.unavailable)
        self.truncate(plan.truncate)
        self.malformed(plan.malformed)
        if plan.slow_seconds:
            self.slow(plan.slow_seconds)
        if plan.missing:
            self.missing = True

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
        self.slow_seconds = 0.0
        self.missing = False

    def _arm(self, kind: str, count: int) -> None:
        with self._lock:
            self._pending[kind] = max(0, count)

    def take(self) -> str | None:
        """The fault for the next metrics request, consuming one, or None."""
        with self._lock:
            for kind in ("unavailable", "malformed", "truncate"):
                if self._pending[kind] > 0:
                    self._pending[kind] -= 1
                    self.injected[kind] += 1
                    return kind
        return None


def _send_body(status: int, body: bytes, content_type: bytes) -> list[Message]:
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class FaultMiddleware:
    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self._app = app
        self._faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        faults = self._faults
        path: str = scope["path"].rstrip("/") or "/"
        if faults.missing and (path == _PREFIX or path.startswith(f"{_PREFIX}/")):
            faults.injected["missing"] += 1
            for message in _send_body(404, wire.path_not_found(), b"application/json"):
                await send(message)
            return
        if faults.missing and path == "/apis":
            for message in _send_body(200, wire.api_group_list(()), b"application/json"):
                await send(message)
            return
        if not path.startswith(f"{_PREFIX}/"):
            await self._app(scope, receive, send)
            return
        # The fault is the one armed when the request arrives: a slow request that wakes
        # later must not take a fault armed for the requests after it.
        kind = faults.take()
        if faults.slow_seconds:
            faults.injected["slow"] += 1
            await anyio.sleep(faults.slow_seconds)
        if kind == "unavailable":
            body = wire.status(
                503, "ServiceUnavailable", "the server is currently unable to handle the request"
            )
            for message in _send_body(503, body, b"application/json"):
                await send(message)
        elif kind == "malformed":
            for message in _send_body(200, MALFORMED_BODY, b"text/html"):
                await send(message)
        elif kind == "truncate":
            await self._truncated(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _truncated(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, capture)
        body = b"".join(chunks)
        cut = body[: len(body) // 2]
        headers = [
            (key, value)
            for key, value in start.get("headers", [])
            if key.lower() not in (b"content-length", b"content-encoding", b"vary")
        ]
        headers.append((b"content-length", str(len(cut)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": cut})

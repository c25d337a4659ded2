"""The ``/metrics`` response: Prometheus text or OpenMetrics by ``Accept``, gzip by
``Accept-Encoding``.

Prometheus asks for ``application/openmetrics-text;version=1.0.0`` first, then
``text/plain;version=0.0.4;q=0.5``, and always accepts gzip. We pick the acceptable format
with the highest ``q`` (OpenMetrics on a tie, text when nothing matches) and never answer 406.
The body of a ``RecorderRegistry`` comes as cached chunks, that of a ``RelayRegistry`` as a
``StreamedBody`` produced while it is sent (a text body inflated piece by piece from the
compressed lines it keeps): neither is joined into ~60 MB at 150,000 pods for a scrape.
"""

from __future__ import annotations

import gzip as gzip_module
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from recorder.exporter import StreamedBody, generic_exposition

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_OPENMETRICS_VERSIONS = ("", "1.0.0", "0.0.1")
_TEXT_RANGES = ("text/plain", "text/*", "*/*")


def _media_ranges(header: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for part in header.split(","):
        media_type, *params = part.split(";")
        parsed = {}
        for param in params:
            name, _, value = param.partition("=")
            parsed[name.strip().lower()] = value.strip().strip('"')
        if media_type.strip():
            ranges.append((media_type.strip().lower(), parsed))
    return ranges


def _quality(params: Mapping[str, str]) -> float:
    try:
        return max(0.0, min(1.0, float(params.get("q", "1"))))
    except ValueError:
        return 0.0


def wants_openmetrics(accept: str) -> bool:
    """Whether to answer ``accept`` with OpenMetrics 1.0 rather than the text format 0.0.4."""
    openmetrics = text = 0.0
    for media_type, params in _media_ranges(accept):
        q = _quality(params)
        if media_type == "application/openmetrics-text":
            if params.get("version", "") in _OPENMETRICS_VERSIONS:
                openmetrics = max(openmetrics, q)
        elif media_type in _TEXT_RANGES:
            text = max(text, q)
    return openmetrics > 0 and openmetrics >= text


def accepts_gzip(accept_encoding: str) -> bool:
    best = {coding: _quality(params) for coding, params in _media_ranges(accept_encoding)}
    return best.get("gzip", best.get("*", 0.0)) > 0


class Exposer(Protocol):
    """A registry that renders its own body (``RecorderRegistry``, ``RelayRegistry``)."""

    def exposition(self, *, openmetrics: bool, gzip: bool) -> list[bytes] | StreamedBody: ...


class ChunksResponse(Response):
    """A response whose body is sent as several chunks with a known total length; the chunks
    of a ``StreamedBody`` are produced one at a time, as the previous one is sent."""

    def __init__(
        self, chunks: list[bytes] | StreamedBody, headers: Mapping[str, str], media_type: str
    ) -> None:
        self._chunks: Iterable[bytes] = chunks
        length = chunks.length if isinstance(chunks, StreamedBody) else sum(map(len, chunks))
        super().__init__(None, 200, {**headers, "Content-Length": str(length)}, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        for chunk in self._chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def metrics_response(
    registry: CollectorRegistry | Exposer, request_headers: Mapping[str, str]
) -> Response:
    openmetrics = wants_openmetrics(request_headers.get("accept", ""))
    compress = accepts_gzip(request_headers.get("accept-encoding", ""))
    if not isinstance(registry, CollectorRegistry) or hasattr(registry, "exposition"):
        chunks: list[bytes] | StreamedBody = registry.exposition(
            openmetrics=openmetrics, gzip=compress
        )
    else:
        body = generic_exposition(registry, openmetrics=openmetrics)
        chunks = [gzip_module.compress(body, compresslevel=1) if compress else body]
    headers = {"Vary": "Accept, Accept-Encoding", "Cache-Control": "no-cache"}
    if compress:
        headers["Content-Encoding"] = "gzip"
    content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    return ChunksResponse(chunks, headers, content_type)

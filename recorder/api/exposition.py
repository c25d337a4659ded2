"""The ``/metrics`` response: Prometheus text or OpenMetrics by ``Accept``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.responses import Response


def metrics_response(registry: CollectorRegistry, accept: str) -> Response:
    encoder, content_type = choose_encoder(accept)
    return Response(encoder(registry), media_type=content_type)

"""Prometheus exposition: data gauges over the latest snapshot, and the recorder's own metrics.

- ``holder``: ``SnapshotHolder``, the latest samples of each kind, withdrawn when too old;
- ``families``: names, HELP strings and units of the data gauges;
- ``filters``: cardinality controls (per-container gauges, namespace allow/deny lists);
- ``collector``: ``DataCollector``, the data gauges as prometheus-client families;
- ``render``: the fast renderer of their sample lines (same bytes as prometheus-client);
- ``selfmetrics``: ``SelfMetrics``, the recorder's own health and throughput;
- ``registry``: ``RecorderRegistry``, all of it in one explicit registry, the ``/metrics``
  body rendered once per snapshot;
- ``relay``: the same across the service's two processes: the worker renders and compresses
  (``LinePublisher``), the server's ``RelayRegistry`` keeps the compressed lines and serves.
"""

from __future__ import annotations

from recorder.exporter.collector import DataCollector
from recorder.exporter.families import DATA_FAMILIES, DataFamily
from recorder.exporter.filters import ExportFilter
from recorder.exporter.holder import SnapshotHolder, SnapshotView
from recorder.exporter.registry import (
    RecorderRegistry,
    StreamedBody,
    build_registry,
    generic_exposition,
)
from recorder.exporter.relay import (
    KindLines,
    LinePublisher,
    LineRenderer,
    OwnExposition,
    RelayRegistry,
    own_exposition,
    receive,
    send_lines,
)
from recorder.exporter.selfmetrics import SelfMetrics, StoreStatistics

__all__ = [
    "DATA_FAMILIES",
    "DataCollector",
    "DataFamily",
    "ExportFilter",
    "KindLines",
    "LinePublisher",
    "LineRenderer",
    "OwnExposition",
    "RecorderRegistry",
    "RelayRegistry",
    "SelfMetrics",
    "SnapshotHolder",
    "SnapshotView",
    "StoreStatistics",
    "StreamedBody",
    "build_registry",
    "generic_exposition",
    "own_exposition",
    "receive",
    "send_lines",
]

"""``DataCollector``: the data gauges as prometheus-client families, rebuilt from the latest
snapshot at every ``collect()``, so a pod that is gone is gone from the next scrape.

Module-level labelled ``Gauge``\\ s would keep every series ever set until removed by hand;
the kubelet's own resource collector warns about exactly that. ``/metrics`` itself is
rendered by the faster ``render.py``; this collector is the reference it must match byte for
byte, and what serves ``registry.collect()`` and ``get_sample_value()``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder.domain import Kind, Resource, Sample
from recorder.exporter.families import NANOCORES_PER_CORE, DataFamily
from recorder.exporter.filters import ExportFilter, exposed_families
from recorder.exporter.holder import SnapshotHolder


def _labels(sample: Sample) -> list[str]:
    """The label values in ``DataFamily.label_names``' order."""
    key = sample.key
    if key.kind is Kind.NODE:
        return [key.cluster, key.node]
    return [key.cluster, key.container, key.namespace, key.pod]


def _value(family: DataFamily, sample: Sample) -> float:
    if family.resource is Resource.CPU:
        return sample.cpu_nanocores / NANOCORES_PER_CORE
    return sample.memory_bytes


class DataCollector(Collector):
    def __init__(self, holder: SnapshotHolder, export_filter: ExportFilter | None = None) -> None:
        self._holder = holder
        self._filter = export_filter or ExportFilter()

    def _empty(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(f.name, f.documentation, labels=list(f.label_names), unit=f.unit)
            for f in exposed_families(self._filter)
        ]

    def describe(self) -> Iterable[Metric]:
        return self._empty()

    def collect(self) -> Iterable[Metric]:
        view = self._holder.view()
        out = self._empty()
        for family, metric in zip(exposed_families(self._filter), out, strict=True):
            published = view.nodes if family.kind is Kind.NODE else view.containers
            if published is None:
                continue
            for sample in published.samples:
                if family.kind is Kind.CONTAINER and not self._filter.allows_namespace(
                    sample.key.namespace
                ):
                    continue
                metric.add_metric(_labels(sample), _value(family, sample))
        return out

"""The metrics PromQL sees (recorder.query.promql.catalog) are the exporter's."""

from __future__ import annotations

from recorder.domain import Kind
from recorder.exporter.families import DATA_FAMILIES
from recorder.query.promql.catalog import FAMILIES, LABEL_NAMES, identity
from recorder.store.series import Series


def test_the_families_are_the_exporters() -> None:
    assert [(f.name, f.help, f.unit, f.kind, f.resource) for f in FAMILIES] == [
        (f.name, f.documentation, f.unit, f.kind, f.resource) for f in DATA_FAMILIES
    ]
    for family in DATA_FAMILIES:
        assert set(family.label_names) <= set(LABEL_NAMES[family.kind])


def test_a_container_without_a_recorded_workload_is_a_bare_pod() -> None:
    series = Series(1, Kind.CONTAINER, "c", "", "ns", "debug", "shell", 0, 0, None)
    assert dict(identity(series, None)) == {
        "cluster": "c", "container": "shell", "namespace": "ns", "pod": "debug",
        "workload": "debug", "workload_kind": "Pod",
    }  # fmt: skip
    assert dict(identity(series, ("Job", "report")))["workload_kind"] == "Job"

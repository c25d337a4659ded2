"""The strategy's pure parts (``recorder.query.recommend``: rounding, proposals, reasons, flags)
and their output (``recorder.query.recommend_output``: quantities, table, CSV, patches)."""

from __future__ import annotations

import csv
import io
import json
import shlex

import pytest
import yaml

from recorder.domain import Resource
from recorder.errors import QueryError
from recorder.query import recommend_output as out
from recorder.query.recommend import (
    Current,
    Recommendation,
    Report,
    Strategy,
    Usage,
    cpu_request_for,
    memory_for,
    propose,
)

MI = 2**20
USAGE = Usage(
    points=500,
    cpu_quantile_nanocores=123_400_000.5,
    cpu_max_nanocores=400_000_000,
    memory_max_bytes=200 * MI,
    coverage=0.5,
    replicas=3.0,
    pods=5,
)
CURRENT = Current(500_000_000, 1_000_000_000, 512 * MI, 512 * MI)


def test_cpu_is_rounded_up_to_a_whole_millicore_and_at_least_one() -> None:
    assert cpu_request_for(0.0) == 1_000_000
    assert cpu_request_for(5_000_000.0) == 5_000_000
    assert cpu_request_for(5_000_001.0) == 6_000_000
    assert cpu_request_for(123_400_000.5) == 124_000_000


def test_memory_is_the_peak_plus_the_buffer_rounded_up_to_a_mib_exactly() -> None:
    assert memory_for(100 * MI, 15) == 115 * MI
    assert memory_for(100 * MI + 1, 15) == 116 * MI
    assert memory_for(100 * MI, 0) == 100 * MI
    assert memory_for(0, 15) == MI
    # 0.1 as written, not as a binary float: 1000 MiB + 0.1 % is 1001 MiB exactly.
    assert memory_for(1000 * MI, 0.1) == 1001 * MI


def test_the_default_proposal_and_its_saving() -> None:
    cpu, memory, throttled, notes = propose(USAGE, CURRENT, {}, Strategy())
    assert (cpu.request, cpu.limit) == (124_000_000, None)
    assert memory.request == memory.limit == 230 * MI
    assert not throttled and notes == ()
    assert cpu.saving_per_month(3.0) == pytest.approx((0.5 - 0.124) * 3 * 730)
    assert memory.saving_per_month(3.0) == pytest.approx((512 - 230) / 1024 * 3 * 730)
    assert cpu.request_change == 124_000_000 - 500_000_000


def test_unset_requests_count_as_zero_in_the_saving() -> None:
    cpu, memory, _t, notes = propose(USAGE, Current(), {}, Strategy())
    assert cpu.saving_per_month(2.0) == pytest.approx(-0.124 * 2 * 730)
    assert memory.request_change == 230 * MI
    assert notes == ()
    _c, _m, _t, unknown = propose(USAGE, Current(known=False), {}, Strategy())
    assert any("not recorded" in n for n in unknown)


def test_too_little_history_gives_no_proposal_and_says_why() -> None:
    short = Usage(99, 1e6, 2e6, MI, 0.001, 1.0, 1)  # type: ignore[arg-type]
    cpu, memory, _t, _n = propose(short, CURRENT, {}, Strategy())
    for p in (cpu, memory):
        assert not p.proposed and p.request is None and p.saving_per_month(1.0) is None
        assert p.reason == (
            "too little history: 99 data points of the 100 needed (coverage 0.1% of the window)"
        )
    cpu, _m, _t, _n = propose(short, CURRENT, {}, Strategy(min_points=99))
    assert cpu.proposed


def test_an_hpa_blocks_only_its_resources_unless_allowed() -> None:
    cpu, memory, _t, _n = propose(USAGE, CURRENT, {"cpu": "web"}, Strategy())
    assert not cpu.proposed and memory.proposed
    assert cpu.reason is not None and cpu.reason.startswith("HorizontalPodAutoscaler web scales")
    cpu, memory, _t, _n = propose(USAGE, CURRENT, {"cpu": "web"}, Strategy(allow_hpa=True))
    assert cpu.proposed and memory.proposed


def test_throttled_and_oom_killed_are_flagged() -> None:
    at_limit = Current(100_000_000, 400_000_000, MI, MI, oom_killed=True)
    _c, _m, throttled, notes = propose(USAGE, at_limit, {}, Strategy())
    assert throttled
    assert "CPU usage reached 100% of its limit" in notes[0]
    assert "OOM-killed" in notes[1]
    _c, _m, throttled, _n = propose(USAGE, at_limit, {}, Strategy(throttle_ratio=1.0))
    assert throttled  # reached the limit itself
    below = Current(100_000_000, 500_000_000, MI, MI)
    assert not propose(USAGE, below, {}, Strategy())[2]  # 80 % of the limit


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu_percentile": 0}, "cpu percentile"),
        ({"cpu_percentile": 100.5}, "cpu percentile"),
        ({"memory_buffer_percent": -1}, "memory buffer"),
        ({"min_points": 0}, "minimum points"),
        ({"throttle_ratio": 0}, "throttle ratio"),
        ({"window_ms": 60_000}, "at least 1h"),
    ],
)
def test_a_bad_parameter_is_a_query_error(fields: dict[str, float], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        Strategy(**fields)  # type: ignore[arg-type]


def test_quantities_as_kubernetes_writes_them() -> None:
    assert out.cpu_text(124_000_000) == "124m"
    assert out.cpu_text(2_000_000_000) == "2"
    assert out.cpu_text(1_500_000_000) == "1500m"
    assert out.cpu_text(1) == "1m"
    assert out.memory_text(230 * MI) == "230Mi"
    assert out.memory_text(2048 * MI) == "2Gi"
    assert out.memory_text(1000) == "1000"
    assert out.memory_text(MI + 1) == "2Mi"


def _recommendation(kind: str, container: str, hpa: dict[str, str] | None = None) -> Recommendation:
    cpu, memory, throttled, notes = propose(USAGE, CURRENT, hpa or {}, Strategy())
    return Recommendation(
        "default", "shop", kind, "web", container, USAGE, cpu, memory, throttled, False, notes
    )


def _report(*found: Recommendation) -> Report:
    return Report(0, 3_600_000, Strategy(), list(found))


def test_a_patch_per_workload_at_its_pod_template() -> None:
    report = _report(
        _recommendation("Deployment", "app"),
        _recommendation("Deployment", "sidecar", {"cpu": "web"}),
        _recommendation("CronJob", "job"),
        _recommendation("Pod", "alone"),
        _recommendation("Job", "once"),
    )
    found = out.patches(report)
    assert [(r.kind, resource) for r, resource, _p in found] == [
        ("Deployment", "deployment"),
        ("CronJob", "cronjob"),
    ]
    deployment = found[0][2]
    assert deployment == {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "resources": {
                                "requests": {"cpu": "124m", "memory": "230Mi"},
                                "limits": {"cpu": None, "memory": "230Mi"},
                            },
                        },
                        {
                            "name": "sidecar",  # the HPA scales on CPU: memory only
                            "resources": {
                                "requests": {"memory": "230Mi"},
                                "limits": {"memory": "230Mi"},
                            },
                        },
                    ]
                }
            }
        }
    }
    cronjob = found[1][2]
    assert list(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]) == ["containers"]
    documents = out.patches_yaml(found).split("---\n")
    assert len(documents) == 2
    assert documents[0].startswith(
        "# default: kubectl patch deployment web -n shop --type strategic --patch-file"
    )
    assert yaml.safe_load(documents[0]) == deployment
    lines = out.patches_json_lines(found).splitlines()
    words = shlex.split(lines[1])
    assert words[:8] == ["kubectl", "patch", "cronjob", "web", "-n", "shop", "--type", "strategic"]
    assert words[8] == "-p" and json.loads(words[9]) == cronjob


@pytest.mark.parametrize(("kind", "says"), [("Job", "a Job's pod template"), ("Pod", "static")])
def test_a_kind_no_patch_can_change_says_where_to_set_the_proposal(kind: str, says: str) -> None:
    cpu, memory, _throttled, notes = propose(USAGE, CURRENT, {}, Strategy(), kind=kind)
    assert cpu.request is not None and memory.request is not None  # still proposed
    assert [n for n in notes if n.startswith("no patch: ") and says in n]
    _cpu, _memory, _throttled, others = propose(USAGE, CURRENT, {}, Strategy(), kind="CronJob")
    assert not [n for n in others if n.startswith("no patch")]
    row = Recommendation(
        "default", "shop", kind, "web", "app", USAGE, cpu, memory, False, False, notes
    )
    assert out.recommendations_table(_report(row)).splitlines()[1].endswith("no patch")


def test_the_table_and_csv_show_current_proposal_change_and_saving() -> None:
    report = _report(_recommendation("Deployment", "app"), _recommendation("Pod", "x", {}))
    text = out.recommendations_table(report)
    header, first, _second = text.splitlines()
    assert header.split()[:4] == ["NAMESPACE", "KIND", "NAME", "CONTAINER"]
    assert "500m -> 124m (-376m)" in first and "1 -> unset" in first
    assert "512Mi -> 230Mi (-282Mi)" in first
    assert f"{(0.5 - 0.124) * 3 * 730:.1f} core-h" in first
    assert out.recommendations_table(report, headers=False).count("\n") == 2
    rows = list(csv.DictReader(io.StringIO(out.recommendations_csv(report))))
    assert rows[0]["cpu_request_proposed"] == "0.124" and rows[0]["cpu_limit_proposed"] == ""
    assert rows[0]["memory_limit_proposed"] == str(230 * MI)
    assert rows[0]["throttled"] == "false"
    data = out.recommendations_json(report)["data"]
    assert data["relativeError"] == 0.01
    assert data["strategy"]["window"] == "14d" and data["strategy"]["cpuPercentile"] == 95.0
    assert data["recommendations"][0]["cpu"]["proposed"] == {"request": 0.124, "limit": None}
    assert data["recommendations"][0]["cpu"]["current"] == {"request": 0.5, "limit": 1.0}


def test_no_proposal_shows_a_question_mark_and_the_reason_tag() -> None:
    r = _recommendation("Deployment", "app", {"cpu": "web", "memory": "web"})
    line = out.recommendations_table(_report(r)).splitlines()[1]
    assert "500m -> ?" in line and "HPA on cpu+memory" in line
    assert out.patches(_report(r)) == []
    assert r.cpu.resource is Resource.CPU and r.memory.resource is Resource.MEMORY


def test_a_cluster_column_when_rows_come_from_several_clusters() -> None:
    one = _recommendation("Deployment", "app")
    other = Recommendation(
        "east",
        *(getattr(one, f) for f in ("namespace", "kind", "name", "container")),
        one.usage,
        one.cpu,
        one.memory,
        one.throttled,
        one.oom_killed,
        one.notes,
    )
    assert not out.recommendations_table(_report(one)).startswith("CLUSTER")
    lines = out.recommendations_table(_report(one, other)).splitlines()
    assert lines[0].split()[:2] == ["CLUSTER", "NAMESPACE"]
    assert [line.split()[0] for line in lines[1:]] == ["default", "east"]

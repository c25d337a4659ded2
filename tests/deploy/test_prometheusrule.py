"""The PrometheusRule of deploy/components/prometheusrule: its rules pass `promtool check
rules`, name only metrics the recorder exports (or the documented `recorder_leader`), each alert
has a runbook entry in the README, and `promtool test rules` fires five of them on made-up
series and keeps them silent on healthy ones."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from recorder.exporter.holder import SnapshotHolder
from recorder.exporter.selfmetrics import SelfMetrics
from tests.deploy.support import PROMETHEUSRULE_SCHEMA, REPO, crd_validator, one, render

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
LEADER_GAUGE = "recorder_leader"
"""Exported by the leader election of the PostgreSQL overlay (another change); the rules
key on it and stay silent until it exists."""


def _rule() -> dict[str, Any]:
    return one(render("postgres-servicemonitor"), "PrometheusRule")


def _write_rules(folder: Path, *, annotations: bool = True) -> Path:
    """The rule's groups as a plain rules file (what the operator hands Prometheus);
    without annotations for `promtool test rules`, which compares them too."""
    groups = _rule()["spec"]["groups"]
    if not annotations:
        for rule in (r for g in groups for r in g["rules"]):
            rule.pop("annotations", None)
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def _alerts() -> list[dict[str, Any]]:
    return [r for g in _rule()["spec"]["groups"] for r in g["rules"] if "alert" in r]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rule_validates_against_its_crd_schema() -> None:
    validator = crd_validator(PROMETHEUSRULE_SCHEMA)
    rule = _rule()
    assert not list(validator.iter_errors(rule))
    rule["spec"]["groups"][0]["rules"][0]["fore"] = "5m"
    assert list(validator.iter_errors(rule))
    rule = _rule()
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert list(validator.iter_errors(rule))


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    done = _promtool("check", "rules", str(_write_rules(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


@needs_promtool
def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    """Guards the check above: promtool does read the expressions."""
    path = _write_rules(tmp_path)
    path.write_text(path.read_text().replace("recorder_samples_buffered)", "recorder_samples_("))
    done = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode != 0


def _exported_names() -> set[str]:
    registry = CollectorRegistry()
    SelfMetrics(registry, SnapshotHolder())
    names = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        suffixes = {"counter": ["_total"], "histogram": ["_count", "_sum", "_bucket"]}
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
    return names


def test_every_metric_the_alerts_read_is_exported() -> None:
    exported = _exported_names() | {LEADER_GAUGE}
    for alert in _alerts():
        used = set(re.findall(r"\brecorder_[a-z_]+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported, f"{alert['alert']} reads {sorted(used - exported)}"


def test_every_alert_has_a_runbook_entry() -> None:
    readme = (REPO / "README.md").read_text()
    runbook = readme.split("\n## Runbook\n", 1)[1].split("\n## ", 1)[0]
    for alert in _alerts():
        assert f"\n### {alert['alert']}\n" in runbook, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}


TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'recorder_component_healthy{component="poll",job="r",instance="a"}'
        values: '1 1 0x15'
      - series: 'recorder_component_healthy{component="poll",job="r",instance="b"}'
        values: '1x17'
    alert_rule_test:
      - {eval_time: 5m, alertname: RecorderPollsFailing}
      - eval_time: 14m
        alertname: RecorderPollsFailing
        exp_alerts:
          - exp_labels: {severity: warning, job: r, instance: a}
  - interval: 1m
    input_series:
      - series: 'recorder_samples_dropped_total{reason="buffer_full",job="r",instance="a"}'
        values: '0 0 0 0 0 500 500 500'
      - series: 'recorder_samples_dropped_total{reason="unreadable",job="r",instance="a"}'
        values: '0x7'
    alert_rule_test:
      - {eval_time: 4m, alertname: RecorderSamplesDropped}
      - eval_time: 6m
        alertname: RecorderSamplesDropped
        exp_alerts:
          - exp_labels: {severity: critical, job: r, instance: a, reason: buffer_full}
  - interval: 1m
    input_series:
      - series: 'recorder_leader{job="r",instance="a"}'
        values: '1 1 0 0 0 0 0'
      - series: 'recorder_leader{job="r",instance="b"}'
        values: '0 0 0 0 0 0 0'
      - series: 'recorder_leader{job="s",instance="c"}'
        values: '1x6'
    alert_rule_test:
      - {eval_time: 3m, alertname: RecorderNoLeader}
      - eval_time: 5m
        alertname: RecorderNoLeader
        exp_alerts:
          - exp_labels: {severity: critical, job: r}
  - interval: 10m
    input_series:
      - series: 'recorder_compaction_duration_seconds_count{job="r",instance="a"}'
        values: '1 2 3 4 5 6 6x40'
      - series: 'recorder_compaction_duration_seconds_count{job="r",instance="b"}'
        values: '0x46'
    alert_rule_test:
      - {eval_time: 4h, alertname: RecorderCompactionBehind}
      - eval_time: 5h
        alertname: RecorderCompactionBehind
        exp_alerts:
          - exp_labels: {severity: warning, job: r}
  - interval: 5m
    input_series:
      - series: 'recorder_database_volume_size_bytes{job="r",instance="a",folder="/data"}'
        values: '1000x100'
      - series: 'recorder_database_volume_available_bytes{job="r",instance="a",folder="/data"}'
        values: '500-5x100'
    alert_rule_test:
      - {eval_time: 3h, alertname: RecorderVolumeNearlyFull}
      - eval_time: 8h
        alertname: RecorderVolumeNearlyFull
        exp_alerts:
          - exp_labels: {severity: warning, job: r, instance: a, folder: /data}
"""


@needs_promtool
def test_promtool_unit_tests_fire_the_alerts(tmp_path: Path) -> None:
    _write_rules(tmp_path, annotations=False)
    (tmp_path / "tests.yaml").write_text(TESTS)
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout

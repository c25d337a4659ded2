"""End to end: ``recorder recommend`` as a process over a simulated cluster recorded through the
real poll path (``tests.recommend_support``): every workload container is listed as the
reference says, the JSON is the query layer's, and every generated patch (YAML documents and
``kubectl patch`` commands) applies with ``kubectl patch --local`` to the simulator's own object,
giving it exactly the proposed resources. Bad flags are one line and exit 2."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recorder.query import recommend_output
from recorder.query.recommend import Report, Strategy, recommend
from recorder.query.workloads import WorkloadFilter
from recorder.store import open_store
from tests.processes import run_recorder
from tests.recommend_support import Expected, Recorded, recorded_cluster, reference

pytestmark = pytest.mark.slow

KUBECTL = shutil.which("kubectl")
_PATHS = {
    "deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "statefulset": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "daemonset": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "replicaset": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "cronjob": "/apis/batch/v1/namespaces/{ns}/cronjobs/{name}",
}


@dataclass
class Recording:
    url: str
    """The database's."""
    recorded: Recorded
    report: Report
    expected: dict[tuple[str, str, str, str], Expected]
    home: Path

    def recommend(self, *args: str) -> subprocess.CompletedProcess[str]:
        end = str(self.recorded.end_ms // 1000)
        return run_recorder(["recommend", "--database-url", self.url, "--end", end, *args])


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    home = tmp_path_factory.mktemp("recommend")
    url = f"sqlite:///{home / 'recorder.db'}"
    store = open_store(url)
    try:
        store.migrate()
        with recorded_cluster(store) as recorded:
            report = recommend(store, WorkloadFilter(), Strategy(), recorded.end_ms)
            expected = reference(recorded, start_ms=report.start_ms)
            yield Recording(url, recorded, report, expected, home)
    finally:
        store.close()


def test_the_table_lists_every_workload_container_as_the_reference(
    recording: Recording,
) -> None:
    result = recording.recommend("-A")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("# ") and "CPU request = p95 (within 1%)" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:7] == [
        "NAMESPACE",
        "KIND",
        "NAME",
        "CONTAINER",
        "PODS",
        "POINTS",
        "COVERAGE",
    ]
    rows = {tuple(line.split()[:4]): line for line in lines[1:]}
    assert set(rows) == set(recording.expected)
    for key, line in rows.items():
        e = recording.expected[key]
        assert line.split()[5] == str(e.points)
        if e.points < 100:
            assert "too little history" in line and "-> ?" in line
        elif "cpu" in e.hpa:
            assert "HPA on cpu" in line
        else:
            proposal = -(-e.memory_proposal // 2**20)
            assert f"-> {proposal}Mi" in line or f"-> {proposal // 1024}Gi" in line
    shop = recording.recommend("-n", "shop", "--no-headers")
    assert shop.returncode == 0 and shop.stderr == ""
    assert all(line.split()[0] != "shop" for line in shop.stdout.splitlines())  # no column
    assert len(shop.stdout.splitlines()) == sum(1 for k in recording.expected if k[0] == "shop")


def test_json_and_csv_are_the_query_layers(recording: Recording) -> None:
    result = recording.recommend("-A", "-o", "json")
    assert result.returncode == 0, result.stderr
    wanted = json.loads(json.dumps(recommend_output.recommendations_json(recording.report)))
    assert json.loads(result.stdout) == wanted
    result = recording.recommend("-A", "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == len(recording.expected)
    assert {(r["namespace"], r["kind"], r["name"], r["container"]) for r in rows} == set(
        recording.expected
    )


def _kubectl(home: Path, *args: str) -> str:
    assert KUBECTL is not None, "kubectl is required for these tests (install kubectl 1.32)"
    config = home / "kubeconfig"
    config.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "KUBECONFIG": str(config)}
    done = subprocess.run(
        [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _object(recording: Recording, resource: str, namespace: str, name: str) -> Path:
    path = _PATHS[resource].format(ns=namespace, name=name)
    response = httpx.get(recording.recorded.url + path, timeout=10)
    assert response.status_code == 200, (path, response.text)
    saved = recording.home / f"{resource}-{namespace}-{name}.json"
    saved.write_text(response.text)
    return saved


def _containers(patched: dict[str, Any], resource: str) -> dict[str, dict[str, Any]]:
    spec = patched["spec"]
    if resource == "cronjob":
        spec = spec["jobTemplate"]["spec"]
    return {c["name"]: c.get("resources", {}) for c in spec["template"]["spec"]["containers"]}


def _check_patched(recording: Recording, patched: dict[str, Any], resource: str) -> None:
    meta = patched["metadata"]
    for name, resources in _containers(patched, resource).items():
        found = [
            r
            for r in recording.report.recommendations
            if (r.namespace, r.name, r.container) == (meta["namespace"], meta["name"], name)
        ]
        assert len(found) == 1
        r = found[0]
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        if r.cpu.proposed and r.cpu.request is not None:
            assert requests["cpu"] == recommend_output.cpu_text(r.cpu.request)
            assert "cpu" not in limits  # the strategy sets no CPU limit
        if r.memory.proposed and r.memory.request is not None:
            assert requests["memory"] == limits["memory"]
            assert requests["memory"] == recommend_output.memory_text(r.memory.request)


def test_every_yaml_patch_applies_with_kubectl(recording: Recording) -> None:
    result = recording.recommend("-A", "-o", "yaml-patch")
    assert result.returncode == 0, result.stderr
    documents = result.stdout.split("---\n")
    expected = recommend_output.patches(recording.report)
    assert len(documents) == len(expected) > 3
    for number, document in enumerate(documents):
        words = shlex.split(document.splitlines()[0].split(": ", 1)[1])
        assert words[:2] == ["kubectl", "patch"]
        resource, name, namespace = words[2], words[3], words[5]
        patch_file = recording.home / f"patch-{number}.yaml"
        patch_file.write_text(document)
        saved = _object(recording, resource, namespace, name)
        out = _kubectl(
            recording.home,
            "patch",
            "--local",
            "-f",
            str(saved),
            "--type",
            "strategic",
            "--patch-file",
            str(patch_file),
            "-o",
            "yaml",
        )
        _check_patched(recording, yaml.safe_load(out), resource)


def test_every_json_patch_command_applies_with_kubectl(recording: Recording) -> None:
    result = recording.recommend("-A", "-o", "json-patch")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(recommend_output.patches(recording.report))
    kinds = set()
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["kubectl", "patch"] and words[4] == "-n" and words[8] == "-p"
        resource, name, namespace = words[2], words[3], words[5]
        kinds.add(resource)
        saved = _object(recording, resource, namespace, name)
        # The command as printed, made local: the object from a file instead of the cluster.
        local = ["patch", "--local", "-f", str(saved), *words[6:], "-o", "yaml"]
        _check_patched(recording, yaml.safe_load(_kubectl(recording.home, *local)), resource)
    assert {"deployment", "statefulset", "daemonset"} <= kinds


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--cpu-percentile", "0"], "cpu percentile 0 is not within (0, 100]"),
        (["--window", "soon"], "--window='soon'"),
        (["--window", "10m"], "the window must be at least 1h"),
        (["-o", "json", "--no-headers"], "--no-headers goes with the table or -o csv"),
        (["-l", "app in (x"], "-l/--selector"),
        (["--end", "someday"], "--end"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    recording: Recording, args: list[str], said: str
) -> None:
    result = recording.recommend("-A", *args)
    assert result.returncode == 2, result
    assert said in result.stderr, result.stderr
    assert result.stderr.startswith("recorder recommend: error: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_missing_database_is_named(tmp_path: Path) -> None:
    result = run_recorder(["recommend", "-A", "--database-url", f"sqlite:///{tmp_path}/no.db"])
    assert result.returncode == 2
    assert "no such file (check --database-url)" in result.stderr

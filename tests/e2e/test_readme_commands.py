"""Every shell command in the README's code blocks, as a reader would paste it.

Each command is run here against a demo database holding eight days of simulated history (in a
scratch folder whose HOME has a kubeconfig for a simulated cluster), or is listed in
``VALIDATED_NOT_RUN`` with the static check it gets instead (a render, a schema, a dry run),
because it needs a real cluster or a Docker engine. A command of the README in neither list
fails the first test: nothing is skipped silently.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from recorder.api.tokens import parse_tokens
from recorder.domain import Batch, Kind
from recorder.simulator import ClusterModel, SimulatorConfig, create_app
from recorder.store import open_store
from tests.deploy import support
from tests.e2e.readme import README, all_commands, quick_start_line
from tests.processes import free_port, recorder_env, wait_for
from tests.servers import serving

pytestmark = pytest.mark.slow

REPO = README.parent
DAYS = 8
STEP_SECONDS = 1800
DEMO = SimulatorConfig(nodes=3, pods=30, seed=1)
"""What ``recorder demo`` simulates by default."""


# -- what runs, and how ------------------------------------------------------------------------


@dataclass(frozen=True)
class Once:
    """Runs to its end and exits 0; its output matches ``expect``."""

    expect: str


@dataclass(frozen=True)
class Service:
    """Runs until stopped: it must record (``/readyz`` 200 and the simulated nodes stored), then
    stop on SIGTERM."""


RUN: dict[str, Once | Service] = {
    "recorder top pods -A --since 7d --agg p95 --sort-by memory --limit 10": Once(
        r"(?m)^[a-z][-a-z]*\s+\S+\s+\d+m\s+\d+Mi$"
    ),
    "recorder query --resource cpu --kind pod --namespace shop --start -24h --step 1h --agg max": (
        Once(r"shop\s+\S+.*\d+m")
    ),
    "recorder query --resource memory --kind node --start 2026-11-20T00:00:00Z --end -1d "
    "--format csv": Once(r"(?m)^default,node-"),
    # The scratch database holds samples only (no cluster objects): every pod is its own
    # workload (kind Pod), which gets a proposal but no patch.
    "recorder recommend -A": Once(r"(?m)^NAMESPACE\s+KIND\s+NAME\s+CONTAINER\s+PODS"),
    "recorder recommend -n shop -o yaml-patch": Once(r"(?m)^# (no patches|default: kubectl)"),
    "recorder run --kubeconfig ~/.kube/config --context prod": Service(),
    "KUBECONFIG=~/.kube/config:~/.kube/eks.yaml recorder poll": Once(
        r"(?m)^nodes: 3 samples.*\npods: \d+ samples"
    ),
}
"""Commands run one by one in the scratch folder."""


def _render(overlay: str) -> Callable[[], None]:
    def check() -> None:
        assert support.render(overlay), overlay

    return check


def _rendered_names(kind: str, name: str, port: str | None = None) -> Callable[[], None]:
    def check() -> None:
        for overlay in ("sqlite", "postgres"):
            objs = support.render(overlay)
            (obj,) = [o for o in support.by_kind(objs, kind) if o["metadata"]["name"] == name]
            assert obj["metadata"]["namespace"] == "kube-metrics-recorder"
            if port is not None:
                assert port in [p.get("name") for p in obj["spec"]["ports"]]

    return check


def _kubectl_dry_run(command: str) -> Callable[[], None]:
    def check() -> None:
        argv = [*shlex.split(command), "--dry-run=client", "-o", "yaml"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert "kube-metrics-recorder" in done.stdout

    return check


def _token_secret_dry_run() -> None:
    _kubectl_dry_run(
        "kubectl -n kube-metrics-recorder create secret generic kube-metrics-recorder-tokens "
        "--from-literal=tokens=REPLACE-WITH-A-LONG-RANDOM-TOKEN,team-a,default"
    )()
    (grant,) = parse_tokens("REPLACE-WITH-A-LONG-RANDOM-TOKEN,team-a,default", "README")
    assert grant.namespaces == {"default"}  # the namespaced overlay's one namespace
    env = {
        e["name"]: e.get("value")
        for e in support.pod_template(support.one(support.render("namespaced"), "Deployment"))[
            "spec"
        ]["containers"][0]["env"]
    }
    assert env["RECORDER_AUTH"] == "tokens"


def _compose(*files: str) -> Callable[[], None]:
    def check() -> None:
        for name in files:
            compose = support.load_compose(REPO / name)
            assert compose["services"], name

    return check


def _dockerfile_takes(*build_args: str) -> Callable[[], None]:
    def check() -> None:
        text = (REPO / "Dockerfile").read_text()
        for arg in build_args:
            assert re.search(rf"(?m)^ARG {arg}\b", text), arg

    return check


def _parses(module: str, *args: str) -> Callable[[], None]:
    def check() -> None:
        done = subprocess.run(
            [sys.executable, "-m", module, *args, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and "--pods" in done.stdout, done.stderr

    return check


def _is_ci() -> None:
    assert "pytest" in (REPO / ".ci" / "run").read_text()


VALIDATED_NOT_RUN: dict[str, tuple[str, Callable[[], None]]] = {
    "bash .ci/run": ("the suite itself: this test runs inside it", _is_ci),
    "python -m bench.exposition --pods 150000": (
        "a benchmark of minutes: its flags parse (bench runs are measured by hand)",
        _parses("bench.exposition"),
    ),
    "kubectl apply -k deploy/overlays/sqlite": ("needs a cluster: rendered", _render("sqlite")),
    "kubectl delete -k deploy/overlays/sqlite": ("needs a cluster: rendered", _render("sqlite")),
    "kubectl apply -k deploy/overlays/postgres": ("needs a cluster: rendered", _render("postgres")),
    "kubectl apply -k deploy/overlays/sqlite-servicemonitor": (
        "needs a cluster: rendered",
        _render("sqlite-servicemonitor"),
    ),
    "kubectl -n kube-metrics-recorder rollout status deployment/kube-metrics-recorder": (
        "needs a cluster: the Deployment has that name and namespace in every overlay",
        _rendered_names("Deployment", "kube-metrics-recorder"),
    ),
    "kubectl -n kube-metrics-recorder port-forward service/kube-metrics-recorder 8080:http": (
        "needs a cluster: the Service has that name, namespace and a port named http",
        _rendered_names("Service", "kube-metrics-recorder", port="http"),
    ),
    "kubectl create namespace kube-metrics-recorder": (
        "needs a cluster: a client-side dry run",
        _kubectl_dry_run("kubectl create namespace kube-metrics-recorder"),
    ),
    "kubectl -n kube-metrics-recorder create secret generic kube-metrics-recorder-database "
    "--from-literal=url='postgresql+psycopg://recorder:PASSWORD@db.example.com:5432/recorder"
    "?sslmode=verify-full'": (
        "needs a cluster: a client-side dry run",
        _kubectl_dry_run(
            "kubectl -n kube-metrics-recorder create secret generic "
            "kube-metrics-recorder-database --from-literal=url=postgresql+psycopg://"
            "recorder:PASSWORD@db.example.com:5432/recorder?sslmode=verify-full"
        ),
    ),
    "kubectl -n kube-metrics-recorder create serviceaccount history-reader": (
        "needs a cluster: a client-side dry run",
        _kubectl_dry_run("kubectl -n kube-metrics-recorder create serviceaccount history-reader"),
    ),
    "kubectl create clusterrolebinding kube-metrics-recorder-history-reader --clusterrole=view "
    "--serviceaccount=kube-metrics-recorder:history-reader": (
        "needs a cluster: a client-side dry run",
        _kubectl_dry_run(
            "kubectl create clusterrolebinding kube-metrics-recorder-history-reader "
            "--clusterrole=view --serviceaccount=kube-metrics-recorder:history-reader"
        ),
    ),
    "kubectl -n kube-metrics-recorder create secret generic kube-metrics-recorder-tokens "
    "--from-literal=tokens='REPLACE-WITH-A-LONG-RANDOM-TOKEN,team-a,default'": (
        "needs a cluster: a client-side dry run, and the line is a valid token file",
        _token_secret_dry_run,
    ),
    "docker compose up -d --build": (
        "needs a Docker engine: the compose file loads (tests/deploy/test_compose.py checks "
        "its schema and runs its command as processes)",
        _compose("docker-compose.yml"),
    ),
    "curl 'http://127.0.0.1:8080/api/v1/history?resource=cpu&kind=node&step=1m&agg=max'": (
        "follows docker compose up: the same request is sent to this test's recorder below",
        lambda: None,
    ),
    "HOST_UID=$(id -u) HOST_GID=$(id -g) KUBECONFIG_FILE=~/.kube/config "
    "RECORDER_CONTEXT=my-context docker compose -f docker-compose.yml "
    "-f docker-compose.cluster.yml up -d --build": (
        "needs a Docker engine: both compose files load",
        _compose("docker-compose.yml", "docker-compose.cluster.yml"),
    ),
    'docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" '
    "-t kube-metrics-recorder:0.1.0 .": (
        "needs a Docker engine: the Dockerfile declares both build arguments",
        _dockerfile_takes("VERSION", "REVISION"),
    ),
}
"""Commands that need a real cluster or a Docker engine, each with what is checked instead."""

ELSEWHERE = {quick_start_line(): "tests/e2e/test_readme_quickstart.py runs it from a fresh copy"}


def _block_commands(heading: str) -> list[str]:
    return [command for block, command in all_commands() if block.heading == heading]


WHOLE_BLOCKS: dict[str, str] = {
    "Trying it without a cluster": r"(?s)NAME\s+CPU\(cores\).*\nnodes: \d+ samples, \d+ stored",
    "Through `kubectl proxy`": r"recording from http://127\.0\.0\.1:8001",
}
"""Blocks run as one pasted script, because their commands depend on each other (a background
server, then its clients): heading -> what their output must show."""


def test_every_readme_command_is_run_or_validated() -> None:
    in_blocks = {command for heading in WHOLE_BLOCKS for command in _block_commands(heading)}
    listed = set(RUN) | set(VALIDATED_NOT_RUN) | set(ELSEWHERE) | in_blocks
    found = [command for _, command in all_commands()]
    assert [c for c in found if c not in listed] == [], "add these to RUN or VALIDATED_NOT_RUN"
    stale = [c for c in [*RUN, *VALIDATED_NOT_RUN, *ELSEWHERE] if c not in found]
    assert stale == [], "these are no longer in the README"
    assert all(_block_commands(heading) for heading in WHOLE_BLOCKS)


@pytest.mark.parametrize("command", list(VALIDATED_NOT_RUN))
def test_validated_not_run(command: str) -> None:
    _, check = VALIDATED_NOT_RUN[command]
    check()


# -- the scratch folder: eight days of demo history, a HOME with kubeconfigs -------------------


def _populate(path: Path, now: float) -> None:
    model = ClusterModel(DEMO)
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    for at in range(int(now) - DAYS * 86400, int(now), STEP_SECONDS):
        samples = model.samples(at)
        nodes = tuple(s for s in samples if s.key.kind is Kind.NODE)
        containers = tuple(s for s in samples if s.key.kind is Kind.CONTAINER)
        labels = {(p.namespace, p.name): p.labels for p in model.pod_metrics(at)}
        store.write(Batch(Kind.NODE, nodes), now_ms=at * 1000)
        store.write(Batch(Kind.CONTAINER, containers, labels), now_ms=at * 1000)
    store.maintain(now_ms=int(now * 1000), grace_ms=0)
    store.close()


def _kubeconfig(server: str, context: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {context}\n  cluster:\n    server: {server}\n"
        f"users:\n- name: {context}\n  user: {{}}\n"
        f"contexts:\n- name: {context}\n  context:\n    cluster: {context}\n"
        f"    user: {context}\n"
        f"current-context: {context}\n"
    )


@dataclass
class Scratch:
    folder: Path
    env: dict[str, str]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    root = tmp_path_factory.mktemp("readme")
    folder, home = root / "work", root / "home"
    (home / ".kube").mkdir(parents=True)
    folder.mkdir()
    _populate(folder / "recorder.db", time.time())
    with serving(create_app(ClusterModel(DEMO))) as simulator:
        (home / ".kube" / "config").write_text(_kubeconfig(simulator, "prod"))
        (home / ".kube" / "eks.yaml").write_text(_kubeconfig(simulator, "eks"))
        port = free_port()
        env = recorder_env({"HOME": str(home), "RECORDER_LISTEN": f"127.0.0.1:{port}"})
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        yield Scratch(folder, env, port)


def _bash(script: str, scratch: Scratch, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=scratch.folder,
            env=scratch.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def _end(process: subprocess.Popen[str], sig: signal.Signals) -> int:
    """Signal the script's whole process group (background servers included), wait for it."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def _recorded(scratch: Scratch, process: subprocess.Popen[str], log: Path) -> Callable[[], bool]:
    def check() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}:\n{log.read_text()[-3000:]}")
        ready = httpx.get(f"{scratch.base}/readyz")
        return ready.status_code == 200 and 'poll":"ok' in ready.text.replace(" ", "")

    return check


@pytest.mark.parametrize("command", list(RUN))
def test_readme_command_runs(command: str, scratch: Scratch, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    how = RUN[command]
    process = _bash(command, scratch, log)
    if isinstance(how, Once):
        try:
            code = process.wait(timeout=120)
        finally:
            _end(process, signal.SIGKILL)
        output = log.read_text()
        assert code == 0, output
        assert re.search(how.expect, output), output
    else:
        try:
            wait_for(_recorded(scratch, process, log), 60, f"{command} to poll")
        finally:
            code = _end(process, signal.SIGTERM)
        output = log.read_text()
        assert code == 0, output
    assert "Traceback" not in output


@pytest.mark.parametrize("heading", list(WHOLE_BLOCKS))
def test_readme_block_runs_as_pasted(heading: str, scratch: Scratch, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    script = "\n".join(_block_commands(heading))
    process = _bash(script, scratch, log)
    if "recorder run" in script:
        try:
            wait_for(_recorded(scratch, process, log), 60, f"the block under {heading!r}")
        finally:
            _end(process, signal.SIGTERM)
    else:
        try:
            code = process.wait(timeout=120)
        finally:
            _end(process, signal.SIGTERM)  # the servers it started in the background
        assert code == 0, log.read_text()
    output = log.read_text()
    for pid in re.findall(r"stop it: kill (\d+)", output):  # what it started with --background
        os.kill(int(pid), signal.SIGTERM)
    assert re.search(WHOLE_BLOCKS[heading], output), output
    assert "Traceback" not in output


def test_the_compose_curl_answers_from_a_recorder(scratch: Scratch, tmp_path: Path) -> None:
    """The README's curl after ``docker compose up``, sent to a recorder on this test's port."""
    (command,) = [c for c in VALIDATED_NOT_RUN if c.startswith("curl ")]
    url = shlex.split(command)[1].replace("127.0.0.1:8080", f"127.0.0.1:{scratch.port}")
    log = tmp_path / "out.log"
    process = _bash("recorder run --kubeconfig ~/.kube/config --context prod", scratch, log)
    try:
        wait_for(_recorded(scratch, process, log), 60, "the recorder")
        answer = httpx.get(url)
    finally:
        _end(process, signal.SIGTERM)
    assert answer.status_code == 200, answer.text
    nodes = {series["labels"]["node"] for series in answer.json()["data"]["series"]}
    assert {node.name for node in ClusterModel(DEMO).nodes} <= nodes

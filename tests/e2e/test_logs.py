"""What the service and the commands log (issue 12): one line per poll and per maintenance
round, the recorder's own lines only (libraries stay at WARNING even with ``--log-level
DEBUG``), no Alembic chatter, and each failure said once."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.kubeconfig import kubeconfig_document, write_kubeconfig
from recorder.store.migrate import head_revision
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for

pytestmark = pytest.mark.slow

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<text>.*)$"
)
POLL_LINE = re.compile(
    r"^poll in \d+\.\d\ds: nodes (?P<nodes>\d+) written, \d+ already stored; "
    r"pods (?P<pods>\d+) written, \d+ already stored$"
)
MAINTENANCE_LINE = re.compile(r"^maintenance in \d+\.\d\ds: .+$")
ALEMBIC = ("Context impl", "Will assume transactional DDL", "Running upgrade")


class NodeLists:
    """Counts the node lists served: each poll reads exactly one."""

    def __init__(self, app: ASGIApp, counter: list[int]) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The Metrics API's node list, one per poll (not the cluster objects' /api/v1/nodes).
        if scope["type"] == "http" and scope["path"].endswith("metrics.k8s.io/v1beta1/nodes"):
            self.counter[0] += 1
        await self.app(scope, receive, send)


@pytest.fixture
def simulator() -> Iterator[tuple[str, list[int]]]:
    polls = [0]
    model = ClusterModel(SimulatorConfig(nodes=2, pods=4, seed=3))
    app = create_app(model, core_api=True, middleware=[Middleware(NodeLists, counter=polls)])
    with SimulatorServer(app) as server:
        yield server.url, polls


def records(output: str) -> list[dict[str, str]]:
    """The log records in ``output`` (other lines, e.g. the demo's banner, left out)."""
    return [m.groupdict() for line in output.splitlines() if (m := LOG_LINE.match(line))]


def test_run_logs_one_line_per_poll_and_maintenance_and_no_library_lines(
    simulator: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, polls = simulator
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_recorder(
        [
            *("run", "--api-url", url, "--listen", f"127.0.0.1:{port}"),
            *("--interval", "0.3s", "--log-level", "DEBUG"),
        ],
        tmp_path,
        env={"RECORDER_MAINTENANCE_INTERVAL": "0.5s"},
    )
    try:
        wait_for(lambda: polls[0] >= 5, 30, "five polls")
        assert httpx.get(f"{base}/readyz").status_code == 200  # a request: no access log
    finally:
        output = stop(process)
    logged = records(output)
    assert logged, output
    strangers = [r for r in logged if r["logger"].split(".")[0] != "recorder"]
    assert strangers == [], output  # httpx, httpcore, apscheduler, alembic, asyncio...
    assert not [line for line in output.splitlines() if any(a in line for a in ALEMBIC)], output
    texts = [r["text"] for r in logged]
    assert sum(t.startswith("migrated the database ") for t in texts) == 1, output
    poll_lines = [t for t in texts if t.startswith("poll in ")]
    assert len(poll_lines) == polls[0], output  # exactly one line per poll, none lost
    assert all(POLL_LINE.match(t) for t in poll_lines), poll_lines
    written = sum(int(m["nodes"]) for t in poll_lines if (m := POLL_LINE.match(t)))
    assert written == node_rows(tmp_path / "recorder.db")  # each write said once, none twice
    rounds = [t for t in texts if t.startswith("maintenance ")]
    assert rounds and all(MAINTENANCE_LINE.match(t) for t in rounds), rounds
    assert [r for r in logged if r["level"] in ("WARNING", "ERROR")] == [
        r for r in logged if "shorter than metrics-server's usual resolution" in r["text"]
    ], output  # a clean run and a clean stop: nothing else to warn about
    assert "Traceback" not in output


def node_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM samples_head h JOIN series s ON s.id = h.series_id"
            " WHERE s.kind = 'node'"
        ).fetchone()
    return int(count)


def test_a_failing_poll_is_one_error_line_per_poll(tmp_path: Path) -> None:
    """The poller, the client's retries and the worker used to log a failure in three
    places; now the poll's line says it, and nothing else does."""
    port, api_port = free_port(), free_port()  # nothing listens on api_port
    log = tmp_path / "run.log"
    process = start_recorder(
        [
            *("run", "--api-url", f"http://127.0.0.1:{api_port}"),
            *("--listen", f"127.0.0.1:{port}", "--interval", "0.5s"),
        ],
        tmp_path,
        log=log,
    )
    try:
        wait_for(lambda: log.read_text().count("poll in ") >= 2, 30, "two failed polls")
    finally:
        stop(process)
    output = log.read_text()
    failing = [line for line in output.splitlines() if "Connection refused" in line]
    assert failing, output
    for line in failing:
        record = LOG_LINE.match(line)
        assert record is not None and record["level"] == "ERROR", line
        assert record["text"].startswith("poll in "), line
        assert "nodes FAILED (connection): cannot reach the Kubernetes API" in line
        assert "pods FAILED (connection)" in line


def test_recorder_poll_says_a_failure_once_and_logs_no_migration_chatter(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    port = free_port()  # nothing listens there
    first = run_recorder(["poll", "--api-url", f"http://127.0.0.1:{port}", "--database-url", db])
    again = run_recorder(["poll", "--api-url", f"http://127.0.0.1:{port}", "--database-url", db])
    assert first.returncode == again.returncode == 1
    output = first.stdout + first.stderr
    assert output.count("cannot reach the Kubernetes API") == 1, output
    assert (
        "pods: 0 samples, 0 stored, 0 already stored, 0 rejected — FAILED: the same error as nodes"
        in output
    )
    assert not [a for a in ALEMBIC if a in output], output
    assert output.count("migrated the database ") == 1, output
    assert "migrated" not in again.stdout + again.stderr  # nothing to migrate the second time
    new = f"sqlite:///{tmp_path / 'new.db'}"
    migrate = run_recorder(["migrate", "--database-url", new])
    assert migrate.returncode == 0
    assert not [a for a in ALEMBIC if a in migrate.stdout + migrate.stderr], migrate
    assert migrate.stdout.splitlines() == [f"migrated {new} from no schema to {head_revision()}"]
    assert migrate.stderr == ""
    again = run_recorder(["migrate", "--database-url", new])
    assert again.stdout.splitlines() == [
        f"{new} is already at the newest schema ({head_revision()})"
    ]


def test_the_configuration_warnings_are_said_once_not_by_each_process(
    simulator: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, polls = simulator
    kubeconfig = write_kubeconfig(
        tmp_path / "kc", kubeconfig_document(url, extra_cluster={"insecure-skip-tls-verify": True})
    )
    port = free_port()
    process = start_recorder(
        [
            *("run", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}"),
            *("--interval", "0.3s"),
        ],
        tmp_path,
    )
    try:
        wait_for(lambda: polls[0] >= 2, 30, "two polls")
    finally:
        output = stop(process)
    assert output.count("insecure-skip-tls-verify is set") == 1, output
    assert output.count("shorter than metrics-server's usual resolution") == 1, output

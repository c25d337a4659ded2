"""Running ``recorder run`` as a real process for fault tests, and reading what it stored."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy

from tests.processes import free_port, run_recorder, start_recorder, wait_for

RESOLUTION_MS = 1000


@dataclass
class Service:
    process: subprocess.Popen[str]
    base: str
    log: Path
    figures: dict[str, float] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> tuple[int, dict[str, str]]:
        response = httpx.get(f"{self.base}/readyz", timeout=10)
        return response.status_code, response.json()["checks"]

    def metric(self, name: str, **labels: str) -> float:
        """A sample of ``/metrics`` (0 when absent)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            match = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
            if match and match[1] == name and (match[2] or "") == wanted:
                return float(match[3])
        return 0.0

    def worker_pid(self) -> int:
        _, checks = self.ready()
        match = re.search(r"pid (\d+)", checks.get("worker", ""))
        assert match, checks
        return int(match[1])

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM, as Kubernetes sends it; the exit code and how long stopping took."""
        begun = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"no exit within {timeout}s of SIGTERM:\n{self.output()}"
            ) from None
        return code, time.monotonic() - begun


@contextmanager
def running(
    tmp_path: Path,
    api_url: str,
    database_url: str,
    *,
    interval: str = "0.25s",
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "service",
) -> Iterator[Service]:
    port = free_port()
    log = tmp_path / f"{name}.log"
    process = start_recorder(
        [
            "run",
            "--api-url",
            api_url,
            "--database-url",
            database_url,
            "--interval",
            interval,
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        tmp_path,
        env=env,
        log=log,
    )
    service = Service(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_for(
            lambda: httpx.get(f"{service.base}/livez", timeout=2).status_code == 200,
            60,
            "the recorder to serve /livez",
        )
        yield service
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def role(service: Service) -> str:
    """The replica's part in the election as ``/readyz`` says it ("" when it does not answer)."""
    try:
        return service.ready()[1].get("role", "")
    except (httpx.HTTPError, ValueError):
        return ""


def usage_lines(service: Service) -> list[str]:
    """The node CPU gauges' lines on ``/metrics``: there while the replica exposes usage."""
    text = httpx.get(f"{service.base}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("recorder_node_cpu_usage_cores")]


def migrate(database_url: str) -> None:
    """``recorder migrate``, as the init container runs it."""
    run_recorder(["migrate"], env={"RECORDER_DATABASE_URL": database_url}).check_returncode()


def stored_timestamps(database_url: str, kind: str = "node") -> dict[str, list[int]]:
    """Every stored timestamp of each series of ``kind``, head and chunks (uncompacted here)."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT s.node || '/' || s.namespace || '/' || s.pod || '/' || s.container, "
                    "h.ts_ms FROM samples_head h JOIN series s ON s.id = h.series_id "
                    "WHERE s.kind = :kind ORDER BY h.ts_ms"
                ),
                {"kind": kind},
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[int]] = {}
    for name, ts in rows:
        found.setdefault(name, []).append(int(ts))
    return found


def gaps(timestamps: dict[str, list[int]], step_ms: int = RESOLUTION_MS) -> int:
    """Resolutions missing between each series' first and last stored sample: samples lost."""
    missing = 0
    for values in timestamps.values():
        distinct = sorted(set(values))
        if distinct:
            expected = (distinct[-1] - distinct[0]) // step_ms + 1
            missing += expected - len(distinct)
    return missing


def duplicates(timestamps: dict[str, list[int]]) -> int:
    return sum(len(v) - len(set(v)) for v in timestamps.values())


def record(figures_file: Path, case: str, **numbers: float) -> None:
    """Append one case's figures (samples served, stored, lost, dropped-and-counted...)."""
    figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
    figures[case] = numbers
    figures_file.write_text(json.dumps(figures, indent=2, sort_keys=True))

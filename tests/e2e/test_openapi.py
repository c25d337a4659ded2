"""A bounded schemathesis run against a populated recorder: no 5xx, no response that breaks
the OpenAPI document, invalid input rejected with 4xx."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import open_store
from tests.processes import free_port, recorder_env, start_recorder, stop, wait_for

pytestmark = pytest.mark.slow


def populate(url: str) -> None:
    """Three hours of history ending an hour ago, two of them compacted into chunks."""
    store = open_store(url)
    store.migrate()
    end = int(time.time() * 1000) - 3_600_000
    start = end - 3 * 3_600_000
    keys = [SeriesKey.for_container("shop", f"web-{i}", "app") for i in range(3)]
    for ts in range(start, end, 60_000):
        store.write(
            Batch(
                Kind.CONTAINER,
                tuple(Sample(k, ts, 30_000, ts % 7_000_000, ts % 5_000_000) for k in keys),
                {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(3)},
            ),
            now_ms=ts,
        )
    store.maintain(now_ms=end, grace_ms=0)
    store.close()


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    populate(f"sqlite:///{tmp_path / 'recorder.db'}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_recorder(
        ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "1s", "--pods", "6"], tmp_path
    )
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the service")
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                # Our schema cannot express every rule (label-selector grammar, time formats),
                # so a schema-valid request may still get a 400 with the error envelope.
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "40",
                "--seed",
                "7",
                "--request-timeout",
                "20",
                "--no-color",
            ],
            env=recorder_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=400,
        )
    finally:
        stop(process)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "No issues found" in result.stdout

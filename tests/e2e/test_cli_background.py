"""``recorder simulate --background``: it returns only once the detached simulator serves and
has written its kubeconfig, prints how to stop it, and refuses a port already taken."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import httpx
import pytest
import yaml

from tests.processes import free_port, run_recorder

pytestmark = pytest.mark.slow


def test_returns_once_it_serves_and_its_kubeconfig_is_whole(tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    done = run_recorder(
        [
            "simulate",
            "--listen",
            f"127.0.0.1:{port}",
            "--write-kubeconfig",
            str(kubeconfig),
            "--background",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (pid,) = re.findall(r"stop it: kill (\d+)", done.stdout)
    try:
        # No waiting here: the command returned, so both must be there already.
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{server}/apis/metrics.k8s.io/v1beta1/nodes").status_code == 200
        assert not list(tmp_path.glob(".*partial"))
    finally:
        os.kill(int(pid), signal.SIGTERM)


def test_a_taken_port_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_recorder(["simulate", "--listen", f"127.0.0.1:{port}", "--background"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"recorder simulate: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert done.stdout == ""

"""The README's quick start line, exactly as written, in a fresh copy of the repository, in a
shell as a fresh Debian machine opens it (the system's Python, which refuses a plain
``pip install``): it must install the recorder and run the demo, which then
records and answers the history API. Only the listen address comes from the environment
(``RECORDER_LISTEN``), so the line itself is untouched and a busy port 8080 cannot fail it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.readme import README, quick_start_line
from tests.processes import free_port, recorder_env, wait_for

pytestmark = pytest.mark.slow

REPO = README.parent
INSTALL_AND_START_SECONDS = 600
"""pip builds the wheel and installs every dependency (from its cache after the first run)."""


def fresh_copy(into: Path) -> Path:
    """What a fresh clone holds: every tracked and every new, not ignored file of this checkout
    (so uncommitted work is tried too), and nothing ignored (no .venv, no recorder.db)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = into / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


FRESH_DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""A new login shell's PATH on Debian: ``python3`` and ``pip`` are the system's, which refuse
``pip install`` outside a virtual environment (PEP 668, ``externally-managed-environment``)."""


def fresh_shell_env(extra: dict[str, str]) -> dict[str, str]:
    env = recorder_env(extra)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = FRESH_DEBIAN_PATH
    assert shutil.which("recorder", path=FRESH_DEBIAN_PATH) is None
    python = shutil.which("python3", path=FRESH_DEBIAN_PATH)
    assert python is not None, "Debian's python3 is missing (.ci/run installs python3-venv)"
    return env


def test_the_quick_start_line_installs_and_runs_the_demo(tmp_path: Path) -> None:
    line = quick_start_line()
    assert "recorder demo" in line and "pip install" in line
    clone = fresh_copy(tmp_path / "kube-metrics-recorder")
    port = free_port()
    env = fresh_shell_env({"RECORDER_LISTEN": f"127.0.0.1:{port}"})
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    log = tmp_path / "quickstart.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", line],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the line's processes form one group, stopped together
        )
    base = f"http://127.0.0.1:{port}"

    def recorded() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the quick start line exited:\n{log.read_text()[-4000:]}")
        answer = httpx.get(f"{base}/api/v1/history", params={"resource": "cpu", "kind": "node"})
        return answer.status_code == 200 and len(answer.json()["data"]["series"]) == 3

    try:
        wait_for(recorded, INSTALL_AND_START_SECONDS, "the demo to record its three nodes")
        assert (clone / ".venv" / "bin" / "recorder").is_file()
        assert (clone / "recorder.db").is_file()
        # The banner's kubeconfig: kubectl top reads the demo's simulated cluster.
        (kubeconfig,) = re.findall(r"kubectl --kubeconfig (\S+) top nodes", log.read_text())
        top = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "top", "nodes"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert top.returncode == 0, top.stderr
        assert len(top.stdout.splitlines()) == 1 + 3, top.stdout
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl+C, as a reader stops it
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "Traceback" not in output
    assert f"http://127.0.0.1:{port}/metrics" in output

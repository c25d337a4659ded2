"""Running `recorder` as a real process in tests: a clean environment, waiting, stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def recorder_env() -> dict[str, str]:
    """This environment without RECORDER_* and KUBE* variables that would steer the process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "KUBE"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_recorder(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "recorder", *args],
        cwd=cwd,
        env=recorder_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """Interrupt the process as Ctrl+C would and return everything it printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output

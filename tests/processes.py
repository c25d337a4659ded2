"""Real processes in tests: `recorder` (and the programs end-to-end tests run beside it) started
one way, in a clean environment, on a free port, waited for and stopped with a deadline.

Every test that runs ``python -m recorder`` goes through `start_recorder` (long-running:
``run``, ``demo``, ``simulate``) or `run_recorder` (to completion: ``poll``, ``migrate``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

RECORDER = (sys.executable, "-m", "recorder")
"""The command line of the recorder under test: this interpreter, this checkout."""


def recorder_command(args: Sequence[str]) -> list[str]:
    return [*RECORDER, *args]


def recorder_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without RECORDER_* and KUBE* variables that would steer the process,
    unbuffered, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECORDER_", "KUBE"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def free_port() -> int:
    """A loopback port free right now, for a process to listen on (``--listen``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def start_process(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[str]:
    """Start ``argv`` with no standard input. Its output (stdout and stderr together) goes to a
    pipe that `stop` returns, or to the file ``log`` for a process that prints much or that the
    test reads while it runs. ``env`` None inherits this environment."""
    if log is None:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    with log.open("w") as out:  # the child holds its own descriptor
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def start_recorder(
    args: Sequence[str],
    cwd: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.Popen[str]:
    """``recorder <args>`` in the background, in `recorder_env` plus ``env``; ``log`` as in
    `start_process`."""
    return start_process(recorder_command(args), cwd=cwd, env=recorder_env(env), log=log)


def run_recorder(
    args: Sequence[str],
    cwd: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``recorder <args>`` to its end, in `recorder_env` plus ``env``; stdout and stderr are
    captured apart."""
    return subprocess.run(
        recorder_command(args),
        cwd=cwd,
        env=recorder_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop(
    process: subprocess.Popen[str],
    *,
    sig: signal.Signals = signal.SIGINT,
    timeout: float = 15,
) -> str:
    """Send ``sig`` (SIGINT as Ctrl+C does, SIGTERM as Kubernetes does), kill the process if it
    has not exited within ``timeout`` seconds, and return what it printed to its pipe ("" when
    its output went to a log file)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""

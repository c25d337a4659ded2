"""``recorder simulate --background``: start the command again as a detached process and
return once it serves, so a script's next line (``kubectl top nodes``) never races it.

The child runs in a session of its own (a terminal's Ctrl+C or a closing shell do not stop it),
with no standard input and its output in an anonymous file that is shown if it fails to start.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from recorder.errors import ConfigError

START_DEADLINE_SECONDS = 30.0


def _accepts(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _written_since(path: Path, since_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns >= since_ns
    except FileNotFoundError:
        return False


def start_detached(
    argv: Sequence[str],
    *,
    host: str,
    port: int,
    writes: Path | None = None,
    deadline_seconds: float = START_DEADLINE_SECONDS,
) -> int:
    """Run ``recorder <argv>`` detached; return its pid once ``host:port`` accepts connections
    and ``writes`` (when given) has been written by it. A ``ConfigError`` with the child's own
    message when it exits first, or when it is not serving by the deadline (it is stopped)."""
    if _accepts(host, port):  # the child could not listen: say it now, not after it fails
        raise ConfigError(f"cannot listen on {host}:{port}: address already in use")
    output = tempfile.TemporaryFile()
    started_ns = time.time_ns()
    child = subprocess.Popen(
        [sys.executable, "-m", "recorder", *argv],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            output.seek(0)
            said = output.read().decode(errors="replace").strip()
            # The child's own error line already names the command: say it as it said it.
            raise ConfigError(said.removeprefix("recorder simulate: error: ") or "it exited")
        if _accepts(host, port) and (writes is None or _written_since(writes, started_ns)):
            output.close()  # the child keeps its own descriptor
            return child.pid
        time.sleep(0.05)
    child.terminate()
    raise ConfigError(f"the simulator did not serve on {host}:{port} within {deadline_seconds:g}s")

"""Progress of `recorder copy` and `recorder maintain` (``recorder.cli.progress``), as a user
sees it: bars with counts and rates on stderr when stderr is a terminal (a pseudo-terminal
here), nothing on stderr when it is a pipe, and the summary on stdout either way."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest

from recorder.store import open_store
from tests.integration.test_store_compactor import HOUR, T0, keys, synthetic, write_polls
from tests.processes import recorder_command, recorder_env

pytestmark = pytest.mark.slow

MINUTE = 60_000
BAR = "%|"
"""What every tqdm bar with a total shows: the percentage, then the bar."""


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run(args: list[str], cwd: Path, *, terminal: bool, size: tuple[int, int] | None) -> Finished:
    """``recorder <args>`` with stdout on a pipe and stderr on a pseudo-terminal (``terminal``,
    of ``size`` rows and columns, or unsized) or on a pipe."""
    if not terminal:
        done = subprocess.run(
            recorder_command(args),
            cwd=cwd,
            env=recorder_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Finished(done.returncode, done.stdout, done.stderr)
    master, slave = os.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    with subprocess.Popen(
        recorder_command(args),
        cwd=cwd,
        env=recorder_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    ) as process:
        os.close(slave)
        drawn = bytearray()
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not data:
                break
            drawn += data
        os.close(master)
        stdout = process.stdout.read() if process.stdout else b""
        code = process.wait(timeout=120)
    return Finished(code, stdout.decode(), drawn.decode(errors="replace"))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite history of 2 compacted blocks and half an hour in the head."""
    path = tmp_path_factory.mktemp("history") / "source.db"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    write_polls(store, synthetic(keys(4), T0, T0 + 2 * HOUR + 30 * MINUTE, seed=3))
    store.maintain(now_ms=T0 + 2 * HOUR + 30 * MINUTE, grace_ms=0)
    store.close()
    return path


def copy_args(source: Path, target: Path) -> list[str]:
    return ["copy", "--from", f"sqlite:///{source}", "--to", f"sqlite:///{target}"]


@pytest.mark.parametrize("size", [(30, 100), None], ids=["sized", "unsized"])
def test_copy_draws_progress_on_a_terminal(
    history: Path, tmp_path: Path, size: tuple[int, int] | None
) -> None:
    done = run(copy_args(history, tmp_path / "target.db"), tmp_path, terminal=True, size=size)
    assert done.returncode == 0, done.stdout + done.stderr
    for task, unit in (("series", "series"), ("chunks", "chunks"), ("head samples", "samples")):
        drawn = [line for line in done.stderr.split("\r") if line.startswith(f"{task}:")]
        assert any(f"100{BAR}" in line and f"{unit}/s" in line for line in drawn), done.stderr
    assert BAR not in done.stdout
    assert "verified: the source holds" in done.stdout


def test_copy_draws_nothing_into_a_pipe(history: Path, tmp_path: Path) -> None:
    done = run(copy_args(history, tmp_path / "target.db"), tmp_path, terminal=False, size=None)
    assert done.returncode == 0, done.stderr
    # Log lines at most (each starts with its time), no bar and no carriage return.
    assert BAR not in done.stderr and "\r" not in done.stderr
    assert all(line[:4].isdigit() for line in done.stderr.splitlines()), done.stderr
    assert "verified: the source holds" in done.stdout


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_maintain_draws_compaction_on_a_terminal_only(tmp_path: Path, terminal: bool) -> None:
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    store = open_store(url)
    store.migrate()
    write_polls(store, synthetic(keys(4), T0, T0 + 2 * HOUR, seed=4))  # long closed blocks
    store.close()
    done = run(["maintain", "--database-url", url], tmp_path, terminal=terminal, size=(30, 100))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("compacted 2 blocks")
    if terminal:
        assert f"compacting head samples: 100{BAR}" in done.stderr
        assert "samples/s" in done.stderr
    else:
        assert done.stderr == ""

"""Every command that touches a database, facing a database it cannot use: a SQLite file whose
folder is missing, a SQLite file another process holds locked, a PostgreSQL server nobody
listens for. Each exits non-zero with one line that names the database and says what to do,
and never with a traceback. ``run`` and ``demo`` check the database before they start the
worker and the HTTP server, so they exit the same way.

The processes run a few at a time (a module fixture starts them in waves of ``AT_ONCE`` and
collects what they print), so the whole file takes about a minute.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import free_port, run_recorder, start_recorder

pytestmark = pytest.mark.slow

BUSY_TIMEOUT = "0.3"
ENV = {"RECORDER_DATABASE_CONNECT_TIMEOUT": BUSY_TIMEOUT}
"""Also SQLite's busy timeout: a locked file fails within a third of a second."""
NO_API = "http://127.0.0.1:9"
"""A Metrics API that is never reached: the database fails first."""
PASSWORD = "s3cret-pw"


def _listen() -> str:
    return f"127.0.0.1:{free_port()}"


# Each command with a database URL in its place; copy twice, once with each side bad.
COMMANDS: dict[str, Callable[[str, str], list[str]]] = {
    "run": lambda url, _good: ["run", "--api-url", NO_API, "--listen", _listen(),
                               "--database-url", url],
    "demo": lambda url, _good: ["demo", "--listen", _listen(), "--pods", "3",
                                "--database-url", url],
    "poll": lambda url, _good: ["poll", "--api-url", NO_API, "--database-url", url],
    "migrate": lambda url, _good: ["migrate", "--database-url", url],
    "maintain": lambda url, _good: ["maintain", "--database-url", url],
    "copy-from": lambda url, good: ["copy", "--from", url, "--to", good],
    "copy-to": lambda url, good: ["copy", "--from", good, "--to", url],
    "query": lambda url, _good: ["query", "--resource", "cpu", "--database-url", url],
    "top": lambda url, _good: ["top", "pods", "--database-url", url],
}  # fmt: skip
READ_ONLY = ("copy-from", "query", "top")
MUST_EXIST = (*READ_ONLY, "maintain")
"""Commands that never create a SQLite file: a path that does not exist is a typo."""
FLAG = {name: "--from" if name == "copy-from" else "--database-url" for name in MUST_EXIST}
"""The flag each of them names in that error."""
FAILURES = ("missing-folder", "locked", "unreachable")
AT_ONCE = 6
"""Commands started together, a wave at a time while the lock is held: all 27 at once on 2
slow cores spent the 5 s deadline on reading the schema version starting up (``no answer
within 5s`` instead of the lock's own message)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int
    output: str
    """stdout and stderr together."""


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def migrated(path: Path) -> str:
    url = sqlite(path)
    done = run_recorder(["migrate", "--database-url", url], env=ENV)
    assert done.returncode == 0, done.stderr
    return url


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Outcome]]:
    """Every command under every failure, started in waves while the lock is held."""
    root = tmp_path_factory.mktemp("databases")
    locked = root / "locked.db"
    migrated(locked)
    holder = sqlite3.connect(locked, isolation_level=None)
    # Exclusive locking mode: readers are shut out too (a plain write lock leaves WAL readers
    # alone, see test_readers_are_not_stopped_by_a_writer).
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("SELECT count(*) FROM sqlite_master").fetchall()
    bad = {
        "missing-folder": lambda _name: sqlite(root / "no-such-folder" / "recorder.db"),
        "locked": lambda _name: sqlite(locked),
        "unreachable": lambda _name: (
            f"postgresql+psycopg://recorder:{PASSWORD}@127.0.0.1:{free_port()}/recorder"
        ),
    }
    source = migrated(root / "source.db")  # copy --to reads it only: one for all
    started: dict[tuple[str, str], subprocess.Popen[str]] = {}
    cases = [(failure, name) for failure in bad for name in COMMANDS]
    try:
        results = {}
        for first in range(0, len(cases), AT_ONCE):
            wave = cases[first : first + AT_ONCE]
            for failure, name in wave:
                good = source if name == "copy-to" else sqlite(root / f"{failure}-{name}.db")
                argv = COMMANDS[name](bad[failure](name), good)
                started[failure, name] = start_recorder(argv, root, env=ENV)
            for key in wave:
                output, _ = started[key].communicate(timeout=60)
                results[key] = Outcome(started[key].returncode, output)
        yield results
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
        holder.close()


ADVICE = {
    "missing-folder": "check that the SQLite file's folder exists",
    "locked": f"longer than the busy timeout ({float(BUSY_TIMEOUT):g}s)",
    "unreachable": "check that the database is running and reachable",
}
CAUSE = {
    "missing-folder": "unable to open database file",
    "locked": "database is locked",
    "unreachable": "Connection refused",
}


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_it_cannot_use_is_one_clear_line(
    outcomes: dict[tuple[str, str], Outcome], command: str, failure: str
) -> None:
    outcome = outcomes[failure, command]
    verb = command.split("-")[0]
    assert outcome.returncode == 2, outcome.output
    assert "Traceback" not in outcome.output
    errors = [line for line in outcome.output.splitlines() if line.startswith("recorder ")]
    assert len(errors) == 1, outcome.output
    error = errors[0]
    assert error.startswith(f"recorder {verb}: error: ")
    if failure == "missing-folder" and command in MUST_EXIST:
        assert error.endswith(f"recorder.db: no such file (check {FLAG[command]})"), error
        return
    assert CAUSE[failure] in error and ADVICE[failure] in error
    assert PASSWORD not in outcome.output
    if failure == "unreachable":
        assert "recorder:***@127.0.0.1:" in error  # which database, without its password


def test_readers_are_not_stopped_by_a_writer(tmp_path: Path) -> None:
    """A plain write lock (another recorder writing) leaves WAL readers alone."""
    url = migrated(tmp_path / "recorder.db")
    holder = sqlite3.connect(tmp_path / "recorder.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = run_recorder(["top", "nodes", "--database-url", url], env=ENV, timeout=30)
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", MUST_EXIST)
def test_a_missing_file_is_not_history(tmp_path: Path, command: str) -> None:
    """A command that reads (or maintains) a database, pointed at a SQLite file that does not
    exist (a typo, as typed: relative to the working folder), says so in one line naming the
    flag, exits 2 and creates nothing, rather than an empty database that "holds no recorder
    history"."""
    done = run_recorder(
        COMMANDS[command]("sqlite:///typo.db", "sqlite:///target.db"), tmp_path, env=ENV
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    verb = command.split("-")[0]
    assert done.stderr.splitlines() == [
        f"recorder {verb}: error: sqlite:///typo.db: no such file (check {FLAG[command]})"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == []

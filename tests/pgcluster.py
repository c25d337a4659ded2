"""A private PostgreSQL cluster for outage and freeze tests (never the shared server).

``PgCluster`` runs ``initdb`` into a temporary folder and starts a postmaster on a free port of
127.0.0.1 with trust authentication; ``stop()``/``start()`` make an outage, ``freeze()``/``thaw()``
stop and continue the postmaster and every child of it (a hung host: its kernel still accepts
connections, nothing answers). Cleanup always stops that cluster only (by its own data folder
and pid) and removes its folder.

initdb refuses to run as root, and CI runs as root: then the folder is owned by the
``postgres`` system user and the server commands run through ``runuser -u postgres --``.
``initdb`` runs once per test session; each cluster starts from a copy of that template.

Use the fixture ``own_postgres`` (import it into a test module, or ``pytest_plugins``), or the
context manager ``running_cluster()``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import free_port

_TEMPLATE_LOCK = threading.Lock()
_template: Path | None = None


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``, if any."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _as_root() -> bool:
    return os.geteuid() == 0


def _command(*args: str | Path) -> list[str]:
    command = [str(a) for a in args]
    return ["runuser", "-u", "postgres", "--", *command] if _as_root() else command


def _own(path: Path) -> None:
    if _as_root():
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def _run(*args: str | Path, timeout: float = 60.0) -> None:
    result = subprocess.run(
        _command(*args), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(str(a) for a in args)} failed ({result.returncode}): "
            f"{result.stdout}{result.stderr}"
        )


def _template_cluster(bin_dir: Path) -> Path:
    """A freshly initialised data folder, made once per process and copied per cluster."""
    global _template
    with _TEMPLATE_LOCK:
        if _template is None:
            root = Path(tempfile.mkdtemp(prefix="pgcluster-template-"))
            _own(root)
            data = root / "data"
            _run(
                bin_dir / "initdb",
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            )
            _template = data
            atexit.register(_remove_template)
        return _template


def _remove_template() -> None:
    if _template is not None:
        shutil.rmtree(_template.parent, ignore_errors=True)


class PgCluster:
    """One private PostgreSQL server. Not started until ``start()``."""

    def __init__(self, bin_dir: Path | None = None):
        found = bin_dir or postgres_bin()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) found")
        self.bin_dir = found
        self.root = Path(tempfile.mkdtemp(prefix="pgcluster-"))
        _own(self.root)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.frozen = False
        template = _template_cluster(self.bin_dir)
        subprocess.run(["cp", "-a", str(template), str(self.data)], check=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        _run(
            self.bin_dir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnects clients; ``immediate``: like a crash)."""
        if self.frozen:
            self.thaw()
        _run(self.bin_dir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _processes(self) -> list[int]:
        """The postmaster and every process whose parent it is."""
        leader = self.postmaster_pid()
        if leader is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == leader:
                children.append(int(stat.parent.name))
        return [leader, *children]

    def _signal(self, signum: int) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def freeze(self) -> None:
        """SIGSTOP the postmaster (first, so it forks nothing new) and all its children."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def create_database(self, name: str) -> str:
        _run(self.bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), name)
        return self.url_for(name)

    def cleanup(self) -> None:
        """Stop this cluster (whatever state it is in) and remove its folder."""
        try:
            if self.postmaster_pid() is not None:
                self.thaw()
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A started private PostgreSQL cluster, stopped and removed after the test."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    with running_cluster() as cluster:
        yield cluster


def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False

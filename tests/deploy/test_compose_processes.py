"""docker-compose.yml's services, started as plain processes, record and are scraped.

No Docker engine runs here, so this test reads docker-compose.yml and starts each service that
runs our image (simulator, migrate, recorder) as a process with the image's ENTRYPOINT and
ENV (from the Dockerfile), the service's command and environment, and compose's start order
and `depends_on` conditions. The rewrites are the ones a container network does for you:

- `SERVICE:PORT` and `0.0.0.0:PORT` become `127.0.0.1:<a free port>`;
- the `postgres` service becomes the local PostgreSQL server (RECORDER_TEST_POSTGRES_URL, else
  postgresql://postgres@127.0.0.1:5432/postgres) with a database made for this test, owned by
  the role and password the compose file uses; a SQLite URL becomes a file under tmp_path;
- container paths (/tmp, /data, mounted files, named volumes) become directories of tmp_path.

Prometheus (when /usr/bin/prometheus is installed: Debian package `prometheus`) runs with the
compose file's flags and mounted prometheus.yml, rewritten the same way; its scrape interval
is also shortened to 1 s so the test does not wait 15 s for a first scrape.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from tests.deploy.support import (
    REPO,
    Instruction,
    Obj,
    command_of,
    environment_of,
    image_services,
    load_compose,
    parse_dockerfile,
)
from tests.processes import free_port, recorder_command

# `postgres`: docker-compose.yml records into PostgreSQL (.ci/run makes sure a server runs).
pytestmark = [pytest.mark.slow, pytest.mark.postgres]

START_TIMEOUT_SECONDS = 30.0
RECORD_TIMEOUT_SECONDS = 45.0
SCRAPE_TIMEOUT_SECONDS = 30.0
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PROMETHEUS_BINARIES = ("/usr/bin/prometheus", "prometheus")


def _depends_on(service: Obj) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _start_order(services: dict[str, Obj]) -> list[str]:
    """Services in an order that respects depends_on (compose's own order)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        assert name not in visiting, f"depends_on cycle through {name}"
        visiting.add(name)
        for dep in _depends_on(services[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def _listen_ports(service: Obj) -> set[int]:
    """Container ports a service listens on: its `--listen`/`--web.listen-address` flags,
    RECORDER_LISTEN and its `ports:` targets."""
    ports: set[int] = set()
    text = " ".join([*command_of(service), *(v or "" for v in environment_of(service).values())])
    ports |= {int(p) for p in re.findall(r"0\.0\.0\.0:(\d+)", text)}
    for entry in service.get("ports", []):
        target = entry["target"] if isinstance(entry, dict) else str(entry).rsplit(":", 1)[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


@dataclass
class Network:
    """Where each compose service's container ports are reachable from this machine."""

    ports: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)

    def rewrite(self, text: str, service: str) -> str:
        """Rewrite addresses in one service's view, in one pass: other services by name, its
        own by 0.0.0.0 (where it listens) or 127.0.0.1 (its healthcheck, in the container)."""
        table: dict[str, str] = {}
        for (name, port), (host, local) in self.ports.items():
            table[f"{name}:{port}"] = f"{host}:{local}"
            if name == service:
                table[f"0.0.0.0:{port}"] = table[f"127.0.0.1:{port}"] = f"{host}:{local}"
        if not table:
            return text
        pattern = "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True))
        return re.sub(rf"(?<![\w.-])(?:{pattern})(?!\d)", lambda m: table[m.group(0)], text)

    def address(self, service: str, port: int) -> str:
        host, local = self.ports[(service, port)]
        return f"{host}:{local}"


@dataclass
class Postgres:
    """The local PostgreSQL server standing in for the compose `postgres` service."""

    admin_url: str
    databases: list[str] = field(default_factory=list)

    def connect(self, database: str | None = None) -> Any:
        import psycopg

        url = make_url(self.admin_url)
        if database is not None:
            url = url.set(database=database)
        return psycopg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=5,
        )

    def database_for(self, url: URL) -> URL:
        """A fresh database owned by the URL's role (created if missing), and the URL to it."""
        from psycopg import sql

        name = f"kmr_compose_{uuid.uuid4().hex[:12]}"
        admin = make_url(self.admin_url)
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [url.username])
            if exists.fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(url.username or ""), sql.Literal(url.password or "")
                    )
                )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(url.username or "")
                )
            )
        self.databases.append(name)
        return url.set(host=admin.host or "127.0.0.1", port=admin.port or 5432, database=name)

    def drop_all(self) -> None:
        from psycopg import sql

        with self.connect() as conn:
            for name in self.databases:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass
class Process:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    log: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name}: {' '.join(self.argv)} (exit {self.popen.poll()})\n" + "\n".join(
            text
        )


@dataclass
class Stack:
    compose: Obj
    root: Path
    network: Network
    processes: dict[str, Process] = field(default_factory=dict)
    database_urls: dict[str, URL] = field(default_factory=dict)
    postgres: Postgres | None = None

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes.values())

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=10)
            process.log.close()


def _entrypoint() -> list[str]:
    entrypoint = parse_dockerfile().final.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = entrypoint.exec_form()
    assert argv, "ENTRYPOINT must be in exec form"
    found = shutil.which(argv[0], path=str(Path(sys.executable).parent))
    if found is not None:
        return [found, *argv[1:]]
    assert argv[0] == "recorder", argv
    return recorder_command(argv[1:])


def _image_environment(root: Path) -> dict[str, str]:
    """The image's ENV with its container paths moved under root."""
    env = parse_dockerfile().environment()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for key in ("HOME", "TMPDIR"):
        if env.get(key) == "/tmp":
            env[key] = str(root / "tmp")
    return env


def _sqlite_path(url: URL, root: Path) -> URL:
    database = url.database or "recorder.db"
    return url.set(database=str(root / "data" / Path(database).name))


def _rewrite_database_url(value: str, stack: Stack, service: str) -> str:
    try:
        url = make_url(value)
    except Exception:
        return value
    if url.get_backend_name() == "sqlite":
        return _sqlite_path(url, stack.root).render_as_string(hide_password=False)
    if url.get_backend_name() != "postgresql":
        return value
    assert url.host in stack.compose["services"], f"{service}: {url.host} is no compose service"
    key = url.render_as_string(hide_password=False)
    if key not in stack.database_urls:
        assert stack.postgres is not None
        stack.database_urls[key] = stack.postgres.database_for(url)
    return stack.database_urls[key].render_as_string(hide_password=False)


def _environment(stack: Stack, name: str, service: Obj) -> dict[str, str]:
    env = _image_environment(stack.root)
    for key, value in environment_of(service).items():
        if value is None:
            env.pop(key, None)  # `KEY:` with no value: taken from the host only if set there
            continue
        env[key] = value
    for key, value in list(env.items()):
        if key == "PATH":
            continue
        if re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            env[key] = _rewrite_database_url(value, stack, name)
        else:
            env[key] = stack.network.rewrite(value, name)
    return env


def _start(stack: Stack, name: str, argv: list[str], env: dict[str, str]) -> Process:
    log_path = stack.root / "logs" / f"{name}.log"
    log = log_path.open("wb")
    workdir = stack.root / "data"
    popen = subprocess.Popen(
        argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    process = Process(name, argv, popen, env, log_path, log)
    stack.processes[name] = process
    return process


def _wait(what: str, check: Callable[[], bool], timeout: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{stack.logs()}")


def _healthcheck(stack: Stack, name: str, service: Obj) -> Callable[[], bool]:
    """The service's compose healthcheck, run as a process (python is this interpreter)."""
    test = service.get("healthcheck", {}).get("test")
    assert isinstance(test, list) and test[0] == "CMD", f"{name}: need an exec-form healthcheck"
    argv = [stack.network.rewrite(arg, name) for arg in test[1:]]
    if argv[0] == "python":
        argv[0] = sys.executable
    env = _environment(stack, name, service)

    def check() -> bool:
        process = stack.processes[name]
        assert process.popen.poll() is None, f"{name} exited\n{stack.logs()}"
        done = subprocess.run(argv, env=env, capture_output=True, timeout=10, check=False)
        return done.returncode == 0

    return check


def _satisfy(stack: Stack, dependency: str, condition: str) -> None:
    if dependency not in stack.processes:
        # Only the database is stood in for, and it is ready once the test has connected to it.
        image = stack.compose["services"][dependency].get("image", "")
        assert image.startswith("postgres:"), f"no process stands in for {dependency}"
        return
    process = stack.processes[dependency]
    if condition == "service_started":
        return
    if condition == "service_completed_successfully":
        try:
            code = process.popen.wait(timeout=START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{dependency} did not finish\n{stack.logs()}") from None
        assert code == 0, f"{dependency} exited {code}\n{stack.logs()}"
        return
    assert condition == "service_healthy", condition
    service = stack.compose["services"][dependency]
    _wait(
        f"{dependency} to be healthy",
        _healthcheck(stack, dependency, service),
        START_TIMEOUT_SECONDS,
        stack,
    )


def _admin_url() -> str:
    return os.environ.get("RECORDER_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def _needs_postgres(compose: Obj) -> bool:
    for service in image_services(compose).values():
        for value in environment_of(service).values():
            if value and re.match(r"^postgresql(\+\w+)?://", value):
                return True
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    compose = load_compose()
    root = tmp_path_factory.mktemp("compose")
    for sub in ("tmp", "data", "logs", "volumes"):
        (root / sub).mkdir()

    network = Network()
    ours = image_services(compose)
    for name, service in compose["services"].items():
        for port in _listen_ports(service):
            network.ports[(name, port)] = ("127.0.0.1", free_port())
    stack = Stack(compose, root, network)

    if _needs_postgres(compose):
        postgres = Postgres(_admin_url())
        try:
            postgres.connect().close()
        except Exception as exc:  # psycopg.OperationalError, DNS, ...
            pytest.fail(f"no PostgreSQL server for the compose test at {_admin_url()}: {exc}")
        stack.postgres = postgres

    entrypoint = _entrypoint()
    try:
        for name in _start_order(compose["services"]):
            if name not in ours:
                continue
            service = compose["services"][name]
            for dependency, condition in _depends_on(service).items():
                _satisfy(stack, dependency, condition)
            argv = [network.rewrite(arg, name) for arg in command_of(service)]
            _start(stack, name, [*entrypoint, *argv], _environment(stack, name, service))
        yield stack
    finally:
        stack.stop()
        if stack.postgres is not None:
            stack.postgres.drop_all()


def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5.0)


def _history(client: httpx.Client, base: str, resource: str, kind: str) -> list[Obj]:
    response = client.get(f"{base}/api/v1/history", params={"resource": resource, "kind": kind})
    if response.status_code != 200:
        return []
    body = response.json()
    assert body["status"] == "success", body
    return [s for s in body["data"]["series"] if s["points"]]


def _recorder_base(stack: Stack) -> str:
    service = stack.compose["services"]["recorder"]
    listen = environment_of(service)["RECORDER_LISTEN"] or "0.0.0.0:8080"
    return f"http://{stack.network.address('recorder', int(listen.rpartition(':')[2]))}"


def _simulated_nodes(stack: Stack) -> int:
    argv = command_of(stack.compose["services"]["simulator"])
    return int(argv[argv.index("--nodes") + 1])


def _stored_rows(stack: Stack) -> int:
    """Rows in the recorder's tables (alembic's own aside), read straight from the database."""
    if not stack.database_urls:  # SQLite
        import sqlite3

        (path,) = (stack.root / "data").glob("*.db")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            tables = [
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if r[0] != "alembic_version"
            ]
            return sum(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
    assert stack.postgres is not None
    from psycopg import sql

    (url,) = stack.database_urls.values()
    with stack.postgres.connect(url.database) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        ]
        total = 0
        for table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            total += row[0]
        return total


def test_recorder_records_the_simulator(stack: Stack) -> None:
    base = _recorder_base(stack)
    with _client() as client:

        def recorded() -> bool:
            for name, process in stack.processes.items():
                code = process.popen.poll()
                assert code is None or name == "migrate", f"{name} exited {code}\n{stack.logs()}"
            try:
                # Each resource's batch is its own write, the nodes' first: right after the
                # nodes show, the containers may be a moment behind.
                return bool(_history(client, base, "cpu", "node")) and bool(
                    _history(client, base, "memory", "container")
                )
            except httpx.TransportError:
                return False

        _wait(
            "the recorder to store node and container samples",
            recorded,
            RECORD_TIMEOUT_SECONDS,
            stack,
        )

        nodes = _history(client, base, "cpu", "node")
        assert len(nodes) == _simulated_nodes(stack), nodes
        assert _history(client, base, "memory", "container"), stack.logs()

        assert client.get(f"{base}/livez").status_code == 200
        _wait(
            "/readyz",
            lambda: client.get(f"{base}/readyz").status_code == 200,
            START_TIMEOUT_SECONDS,
            stack,
        )
        metrics = client.get(f"{base}/metrics").text
        node_line = r'^recorder_node_cpu_usage_cores\{cluster="default",node="([^"]+)"'
        exposed = set(re.findall(node_line, metrics, re.M))
        assert len(exposed) == _simulated_nodes(stack), metrics[:2000]

    assert _stored_rows(stack) > 0, "the history API answered, but the database is empty"


def test_image_healthcheck_passes_against_the_recorder(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK, run with the recorder's environment, finds /livez."""
    check = parse_dockerfile().final.last("HEALTHCHECK")
    assert check is not None
    argv = Instruction("CMD", check.value.partition("CMD ")[2], check.line).exec_form()
    assert argv is not None and argv[0] == "python"
    recorder = stack.processes["recorder"]

    def healthy() -> bool:
        done = subprocess.run(
            [sys.executable, *argv[1:]], env=recorder.env, capture_output=True, timeout=15
        )
        return done.returncode == 0

    _wait("the image HEALTHCHECK to pass", healthy, START_TIMEOUT_SECONDS, stack)


def _prometheus_binary() -> str | None:
    for candidate in PROMETHEUS_BINARIES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _mounts(stack: Stack, name: str, service: Obj) -> dict[str, Path]:
    """Container path -> host path: bind mounts copied under root with addresses rewritten,
    named volumes as empty directories."""
    out: dict[str, Path] = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith((".", "/")):
            original = (REPO / source).resolve()
            copy = stack.root / "mounts" / name / original.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(stack.network.rewrite(original.read_text(), name))
            out[target] = copy
        else:
            volume = stack.root / "volumes" / source
            volume.mkdir(exist_ok=True)
            out[target] = volume
    return out


def test_prometheus_scrapes_the_recorder(stack: Stack) -> None:
    binary = _prometheus_binary()
    if binary is None:
        pytest.fail("Prometheus is not installed (Debian package prometheus)")
    name = "prometheus"
    service = stack.compose["services"][name]
    mounts = _mounts(stack, name, service)
    argv = []
    for arg in command_of(service):
        flag, sep, value = arg.partition("=")
        if sep and value in mounts:
            arg = f"{flag}={mounts[value]}"
        argv.append(stack.network.rewrite(arg, name))
    config_path = Path(next(a for a in argv if a.startswith("--config.file=")).partition("=")[2])
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("global", {}).update(scrape_interval="1s", scrape_timeout="1s")
    config_path.write_text(yaml.safe_dump(config))
    job = config["scrape_configs"][0]["job_name"]

    for dependency, condition in _depends_on(service).items():
        _satisfy(stack, dependency, condition)
    _start(stack, name, [binary, *argv], {"PATH": os.environ.get("PATH", "")})
    base = f"http://{stack.network.address(name, 9090)}"

    with _client() as client:

        def up() -> bool:
            assert stack.processes[name].popen.poll() is None, stack.logs()
            try:
                response = client.get(
                    f"{base}/api/v1/query", params={"query": f'up{{job="{job}"}}'}
                )
            except httpx.TransportError:
                return False
            result = response.json()["data"]["result"] if response.status_code == 200 else []
            return any(r["value"][1] == "1" for r in result)

        _wait(f'up{{job="{job}"}} == 1 in Prometheus', up, SCRAPE_TIMEOUT_SECONDS, stack)
        response = client.get(
            f"{base}/api/v1/query", params={"query": "count(recorder_node_cpu_usage_cores)"}
        )
        (result,) = response.json()["data"]["result"]
        assert int(result["value"][1]) == _simulated_nodes(stack)
        # honor_labels: the exported `node` label is the measured node, not renamed.
        response = client.get(
            f"{base}/api/v1/query",
            params={"query": "count(recorder_node_cpu_usage_cores{exported_node!=''})"},
        )
        assert response.json()["data"]["result"] == []

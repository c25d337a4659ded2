"""No credential ever appears in a log line, an error or a response body (issue 12).

Every place a credential can be given is used at once, with ``--log-level DEBUG``: a password
in ``--api-url``, the database URL's password (``user:password@`` and ``?password=``, which
libpq accepts, and ``?sslpassword=``), a kubeconfig token (the real one the API server accepts,
and a wrong one it rejects), a token file, and a kubeconfig whose YAML is broken on the token's
line. The service runs, polls, serves, loses its database; every byte it printed or answered is
searched for each secret.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.pgcluster import PgCluster, own_postgres
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for
from tests.simcluster import SecureCluster, secure_cluster

__all__ = ["own_postgres"]  # the fixture: a private PostgreSQL this test may stop

pytestmark = pytest.mark.slow

API_URL_PASSWORD = "apiurl-pw-7f3a91"
DB_PASSWORD = "db-userinfo-pw-91c2d"
DB_QUERY_PASSWORD = "db-query-pw-55d0e"
DB_SSL_PASSWORD = "db-sslpassword-02be4"
WRONG_TOKEN = "kubeconfig-token-4c1e7"
TOKEN_FILE_TOKEN = "token-file-token-8a9d2"
YAML_TOKEN = "yaml-broken-token-e6f70"


class Authorizations:
    """Records the Authorization header of every request."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.seen.append(headers.get(b"authorization", b"").decode())
        await self.app(scope, receive, send)


@pytest.fixture
def cluster() -> Iterator[SecureCluster]:
    with secure_cluster() as running:
        yield running


class Seen:
    """Everything the recorder printed or answered, by where it came from."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, where: str, text: str) -> str:
        self.texts[where] = text
        return text

    def process(self, where: str, result: object) -> None:
        self.add(where, f"{result.stdout}{result.stderr}")  # type: ignore[attr-defined]

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        self.add(where, f"{response.status_code} {response.headers} {response.text}")
        return response


def test_no_secret_is_ever_logged_printed_or_served(
    cluster: SecureCluster, own_postgres: PgCluster, tmp_path: Path
) -> None:
    secrets = [
        API_URL_PASSWORD,
        DB_PASSWORD,
        DB_QUERY_PASSWORD,
        DB_SSL_PASSWORD,
        WRONG_TOKEN,
        TOKEN_FILE_TOKEN,
        YAML_TOKEN,
        cluster.cluster_token,  # the real one, which the API server accepts
    ]
    seen = Seen()
    debug = ["--log-level", "DEBUG"]
    database = (
        f"postgresql+psycopg://postgres:{DB_PASSWORD}@127.0.0.1:{own_postgres.port}/postgres"
        f"?password={DB_QUERY_PASSWORD}&sslpassword={DB_SSL_PASSWORD}"
    )
    good = cluster.kubeconfig(tmp_path / "good-kc")
    seen.process("migrate", run_recorder(["migrate", "--database-url", database, *debug]))
    assert "migrated postgresql+psycopg://postgres:***@" in seen.texts["migrate"]

    # The service with a kubeconfig token, polling into PostgreSQL, until the database goes.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    service = start_recorder(
        [
            *("run", "--kubeconfig", str(good), "--database-url", database),
            *("--listen", f"127.0.0.1:{port}", "--interval", "0.3s", *debug),
        ],
        tmp_path,
        log=log,
    )
    try:
        wait_for(lambda: "nodes 3 written" in log.read_text(), 30, "a stored poll")
        with httpx.Client(base_url=base, timeout=10) as client:
            assert seen.response("readyz up", client.get("/readyz")).status_code == 200
            seen.response("metrics", client.get("/metrics"))
            history = client.get("/api/v1/history", params={"resource": "cpu", "kind": "node"})
            assert seen.response("history up", history).status_code == 200
            own_postgres.stop()
            wait_for(lambda: client.get("/readyz").status_code == 503, 20, "/readyz to say 503")
            ready = seen.response("readyz down", client.get("/readyz"))
            assert ready.json()["checks"]["database"] == "unreachable (details in the log)"
            failed = client.get("/api/v1/history", params={"resource": "cpu", "kind": "node"})
            assert seen.response("history down", failed).status_code == 503
            wait_for(lambda: "samples wait" in log.read_text(), 20, "a failed write logged")
            wait_for(lambda: "waiting for the database" in log.read_text(), 20, "a poll line")
            time.sleep(0.5)
    finally:
        stop(service)
    for anonymous in ("readyz down", "history down"):  # nor who or where the database is
        body = seen.texts[anonymous].split(" ", 1)[1]
        assert str(own_postgres.port) not in body and "postgres" not in body, body
    run_log = seen.add("run log", log.read_text())
    assert "the database check failed" in run_log and "writing to the database failed" in run_log
    assert f"postgres:***@127.0.0.1:{own_postgres.port}/postgres?password=***" in run_log
    down = ["--kubeconfig", str(good), "--database-url", database, *debug]
    seen.process("poll, database down", run_recorder(["poll", *down]))
    seen.process(
        "query, database down",
        run_recorder(["query", "--database-url", database, "--resource", "cpu", *debug]),
    )

    # A token the API server rejects, from the kubeconfig and from a token file.
    poll = ["poll", "--database-url", f"sqlite:///{tmp_path / 'poll.db'}", *debug]
    wrong = cluster.kubeconfig(tmp_path / "wrong-kc", user={"token": WRONG_TOKEN})
    seen.process("poll, wrong token", run_recorder([*poll, "--kubeconfig", str(wrong)]))
    assert "401 Unauthorized" in seen.texts["poll, wrong token"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_FILE_TOKEN)
    from_file = cluster.kubeconfig(tmp_path / "file-kc", user={"tokenFile": str(token_file)})
    seen.process("poll, token file", run_recorder([*poll, "--kubeconfig", str(from_file)]))
    assert "401 Unauthorized" in seen.texts["poll, token file"]

    # A kubeconfig broken on the token's line.
    broken = tmp_path / "broken-kc"
    broken.write_text(good.read_text().replace(cluster.cluster_token, f"{YAML_TOKEN}: [oops"))
    assert YAML_TOKEN in broken.read_text()
    seen.process("poll, broken YAML", run_recorder([*poll, "--kubeconfig", str(broken)]))
    assert "is not valid YAML: line " in seen.texts["poll, broken YAML"]

    # A password in --api-url: sent as basic authentication, shown nowhere.
    authorizations: list[str] = []
    app = create_app(
        ClusterModel(SimulatorConfig(nodes=2, pods=3)),
        middleware=[Middleware(Authorizations, seen=authorizations)],
    )
    with SimulatorServer(app) as plain:
        with_password = plain.url.replace("http://", f"http://reader:{API_URL_PASSWORD}@")
        seen.process("poll, --api-url", run_recorder([*poll, "--api-url", with_password]))
    expected = "Basic " + base64.b64encode(f"reader:{API_URL_PASSWORD}".encode()).decode()
    assert authorizations and set(authorizations) == {expected}
    assert "nodes: 2 samples" in seen.texts["poll, --api-url"]
    unreachable = f"http://reader:{API_URL_PASSWORD}@127.0.0.1:{free_port()}"
    seen.process("poll, --api-url down", run_recorder([*poll, "--api-url", unreachable]))
    assert (
        "cannot reach the Kubernetes API at http://127.0.0.1:" in seen.texts["poll, --api-url down"]
    )

    leaks = [
        (secret, where)
        for secret in secrets
        for where, text in seen.texts.items()
        if secret in text
    ]
    assert leaks == [], "\n\n".join(f"{where}:\n{seen.texts[where]}" for _, where in leaks)

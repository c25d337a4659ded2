"""``recorder run`` with access control on, as a process: Kubernetes mode against the
simulator's review endpoints (a token allowed in one namespace), and a token file or a TLS pair
that cannot be used stopping the start with one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.reviews import ReviewMiddleware, ReviewPolicy, ReviewUser
from tests.processes import free_port, run_recorder, start_recorder, stop, wait_for

pytestmark = pytest.mark.slow

TEAM_TOKEN = "team-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


@pytest.fixture
def cluster() -> Iterator[tuple[str, str]]:
    """The simulator's URL, answering reviews too, and the one namespace the team may read."""
    model = ClusterModel(SimulatorConfig(nodes=2, pods=8, seed=3))
    namespace = sorted({p.namespace for p in model.pod_metrics(model.now())})[0]
    policy = ReviewPolicy()
    policy.add(TEAM_TOKEN, "team", ReviewUser(namespaces=frozenset({namespace})))
    policy.add(
        ADMIN_TOKEN,
        "admin",
        ReviewUser(cluster_wide=True, non_resource_urls=frozenset({"/metrics"})),
    )
    app = create_app(model, middleware=[Middleware(ReviewMiddleware, policy=policy)])
    with SimulatorServer(app) as server:
        yield server.url, namespace


def test_run_with_kubernetes_access_control(cluster: tuple[str, str], tmp_path: Path) -> None:
    url, namespace = cluster
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_recorder(
        ["run", "--api-url", url, "--listen", f"127.0.0.1:{port}", "--interval", "1s"],
        tmp_path,
        env={"RECORDER_AUTH": "kubernetes", "RECORDER_CLUSTER_OBJECTS": "false"},
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    team = {"Authorization": f"Bearer {TEAM_TOKEN}"}
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the service")
        wait_for(
            lambda: bool(httpx.get(f"{base}/api/v1/series", headers=admin).json()["data"]),
            30,
            "a poll",
        )
        assert httpx.get(f"{base}/api/v1/series").status_code == 401
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers=team).status_code == 403
        assert httpx.get(f"{base}/metrics", headers=admin).status_code == 200
        mine = httpx.get(f"{base}/api/v1/series", headers=team)
        assert mine.headers["X-Recorder-Filtered-Namespaces"] == namespace
        assert {s["labels"]["namespace"] for s in mine.json()["data"]} == {namespace}
        nodes = {"kind": "node"}
        assert httpx.get(f"{base}/api/v1/series", params=nodes, headers=team).status_code == 403
    finally:
        output = stop(process)
    assert TEAM_TOKEN not in output and ADMIN_TOKEN not in output


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--auth", "tokens", "--auth-token-file", "missing"], "cannot read the token file"),
        (["--auth", "tokens"], "auth=tokens needs auth_token_file"),
        (["--tls-cert-file", "missing.crt", "--tls-key-file", "missing.key"], "not a usable"),
    ],
)
def test_access_settings_that_cannot_work_stop_the_start(
    flags: list[str], problem: str, tmp_path: Path
) -> None:
    result = run_recorder(
        ["run", "--api-url", f"http://127.0.0.1:{free_port()}", "--listen", "127.0.0.1:0", *flags],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr

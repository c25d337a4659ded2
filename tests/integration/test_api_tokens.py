"""``--auth tokens``: the token file's format, its reload on change, and the HTTP API guarded
by it (a namespace-scoped token, a /metrics-only token, a token for everything)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from recorder.api.access import CLUSTER, METRICS, Question
from recorder.api.app import AppDeps, create_app
from recorder.api.tokens import TokenAccess, parse_tokens
from recorder.errors import ConfigError
from recorder.store import Store, open_store
from tests.integration.test_api_access import NOW, _write
from tests.servers import serving

TEAM = "team-a-token-0123456789"
PROMETHEUS = "prometheus-token-0123456789"
ADMIN = "admin-token-0123456789abcdef"
FILE = f"""# who may read the recorder
{TEAM},team-a,a
{PROMETHEUS},prometheus,/metrics

{ADMIN},admin
"""


def test_the_file_format() -> None:
    team, prometheus, admin = parse_tokens(FILE, "tokens")
    assert (team.name, team.namespaces, team.everything, team.metrics) == (
        "team-a",
        frozenset({"a"}),
        False,
        False,
    )
    assert team.allows(Question.of_namespace("a")) and not team.allows(CLUSTER)
    assert prometheus.allows(METRICS) and not prometheus.allows(Question.of_namespace("a"))
    assert admin.everything and admin.allows(CLUSTER) and admin.allows(METRICS)
    (unnamed,) = parse_tokens("0123456789abcdef0123\n", "tokens")
    assert unnamed.name == "line-1" and unnamed.everything


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("short,x", "line 1: the token must be at least 16 characters"),
        (f"{TEAM},x,Not_A_Namespace", "line 1: 'Not_A_Namespace' is neither *, /metrics"),
        (f"{TEAM},x\n{ADMIN},x", "line 2: the name 'x' is given twice"),
    ],
)
def test_a_bad_line_is_named_without_its_token(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tokens(text, "tokens")
    assert f"tokens, {problem}" in str(caught.value)
    assert TEAM not in str(caught.value) and ADMIN not in str(caught.value)


def test_the_file_is_read_again_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TEAM},team-a,a\n")
    now = [0.0]
    access = TokenAccess(path, clock=lambda: now[0])

    def holder(token: str) -> str | None:
        grant = access.grant_of(token)
        return None if grant is None else grant.name

    assert holder(TEAM) == "team-a"
    path.write_text(f"{ADMIN},admin\n")
    os.utime(path, ns=(1, 10**18))
    assert holder(ADMIN) is None  # checked at most once a second
    now[0] = 2.0
    assert holder(ADMIN) == "admin"
    assert holder(TEAM) is None
    path.write_text("broken\n")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] = 4.0
    with caplog.at_level(logging.ERROR):
        assert holder(ADMIN) == "admin"  # the old tokens stay
    assert "line 1" in caplog.text and ADMIN not in caplog.text


def test_an_unreadable_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the token file"):
        TokenAccess(tmp_path / "missing")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "tokens").write_text(FILE)
    store: Store = open_store(f"sqlite:///{folder / 'recorder.db'}")
    store.migrate()
    _write(store)
    deps = AppDeps(
        store,
        CollectorRegistry(),
        clock=lambda: NOW,
        authorizer=TokenAccess(folder / "tokens"),
    )
    with serving(create_app(deps)) as url:
        yield url
    store.close()


def _get(url: str, path: str, token: str | None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{url}{path}", params=params, headers=headers)


def test_a_namespace_token_reads_its_namespace_only(url: str) -> None:
    assert _get(url, "/api/v1/series", TEAM, namespace="a").status_code == 200
    assert _get(url, "/api/v1/series", TEAM, namespace="b").status_code == 403
    assert _get(url, "/api/v1/series", TEAM, kind="node").status_code == 403
    assert _get(url, "/metrics", TEAM).status_code == 403
    spanning = _get(url, "/api/v1/history", TEAM, resource="memory")
    assert spanning.headers["X-Recorder-Filtered-Namespaces"] == "a"
    assert {s["labels"]["namespace"] for s in spanning.json()["data"]["series"]} == {"a"}


def test_a_metrics_token_reads_metrics_only(url: str) -> None:
    assert _get(url, "/metrics", PROMETHEUS).status_code == 200
    assert _get(url, "/api/v1/series", PROMETHEUS).status_code == 403


def test_an_unscoped_token_reads_everything(url: str) -> None:
    answer = _get(url, "/api/v1/series", ADMIN)
    assert answer.status_code == 200 and "X-Recorder-Filtered-Namespaces" not in answer.headers
    assert _get(url, "/api/v1/series", ADMIN, kind="node").json()["data"]
    assert _get(url, "/metrics", ADMIN).status_code == 200
    assert _get(url, "/api/v1/series", None).status_code == 401
    assert _get(url, "/api/v1/series", ADMIN[:-1]).status_code == 401

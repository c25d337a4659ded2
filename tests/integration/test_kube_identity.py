"""The cluster's identity in-cluster: `recorder poll` in a pod (the service account's token,
CA and namespace files, ``KUBERNETES_SERVICE_HOST``) against the simulator over TLS with its
access control reads the ``kube-system`` namespace's UID and records under a name made from
it, keeping the UID beside the name; two clusters without ``--cluster`` get names of their own
in one PostgreSQL database; the same ``--cluster`` from two clusters is refused; without the
RBAC to read the namespace it falls back to ``default`` with one warning."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from recorder.cli import main
from recorder.errors import MalformedResponseError, MetricsApiNotFound, MetricsApiResponseTooLarge
from recorder.kube import config as kube_config
from recorder.kube.client import MetricsClient
from recorder.kube.config import ClusterConfig
from recorder.kube.identity import MAX_NAMESPACE_BYTES, cluster_uid, read_uid
from recorder.kube.retry import RetryPolicy
from recorder.simulator import SimulatorConfig, SimulatorServer, create_app
from recorder.simulator.access import Identity
from recorder.simulator.objects import uid
from recorder.store import open_store, schema
from recorder.store.clusters import KnownCluster, known_clusters, stored_clusters
from tests.simcluster import CLUSTER_READER, TEAM_NAMESPACES, TEAM_READER, SecureCluster
from tests.simcluster import secure_cluster as start_cluster

Poll = Callable[..., tuple[int, str]]


def _config(seed: int) -> SimulatorConfig:
    return SimulatorConfig(nodes=2, pods=6, seed=seed, namespaces=("default", "shop"))


@pytest.fixture(scope="module")
def east() -> Iterator[SecureCluster]:
    with start_cluster(config=_config(11)) as running:
        yield running


@pytest.fixture(scope="module")
def west() -> Iterator[SecureCluster]:
    with start_cluster(config=_config(12)) as running:
        yield running


@pytest.fixture
def poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Poll:
    """`recorder poll` in this process, as in a pod of ``cluster`` with ``identity``'s
    service-account token (no kubeconfig anywhere)."""
    for name in list(os.environ):
        if name.startswith(("RECORDER_", "KUBE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    accounts = iter(range(1000))

    def run(
        cluster: SecureCluster,
        database: str,
        *args: str,
        identity: Identity = CLUSTER_READER,
    ) -> tuple[int, str]:
        account = tmp_path / f"serviceaccount-{next(accounts)}"
        account.mkdir()
        cluster.access.add_rotating_token(identity, account / "token")
        (account / "ca.crt").write_bytes(cluster.ca.cert_pem)
        (account / "namespace").write_text("monitoring")
        host, port = cluster.url.removeprefix("https://").rsplit(":", 1)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        monkeypatch.setattr(kube_config, "SERVICE_ACCOUNT_DIR", account)
        capsys.readouterr()
        code = main(["poll", "--database-url", database, "--interval", "2s", *args])
        return code, capsys.readouterr().err

    return run


def kube_system_uid(cluster: SecureCluster) -> str:
    """The UID the simulator gives its ``kube-system`` namespace (its seed's)."""
    return uid(cluster.model.config.seed, "Namespace", "kube-system")


def _migrate(database: str) -> None:
    store = open_store(database)
    try:
        store.migrate()
    finally:
        store.close()


def _known(database: str) -> tuple[list[str], dict[str, KnownCluster]]:
    store = open_store(database)
    try:
        with store.engine.connect() as conn:
            return stored_clusters(conn), known_clusters(conn)
    finally:
        store.close()


def _series(database: str, cluster: str) -> set[tuple[str, str]]:
    store = open_store(database)
    s = schema.series
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(s.c.namespace, s.c.pod).where(
                    s.c.cluster == cluster, s.c.kind == "container"
                )
            )
            return {(row[0], row[1]) for row in rows}
    finally:
        store.close()


def test_an_in_cluster_recorder_records_under_its_kube_system_uid(
    east: SecureCluster, database_url: str, poll: Poll
) -> None:
    uid = kube_system_uid(east)
    name = f"cluster-{uid[:8]}"
    _migrate(database_url)
    code, err = poll(east, database_url)
    assert code == 0, err
    stored, known = _known(database_url)
    assert stored == [name]
    assert known[name].kube_system_uid == uid
    first = known[name]
    assert first.first_seen_ms == first.last_seen_ms > 0
    assert "/api/v1/namespaces/kube-system" in east.paths

    code, err = poll(east, database_url)  # the next start: same name, last start moved on
    assert code == 0, err
    stored, known = _known(database_url)
    assert stored == [name]
    assert known[name].first_seen_ms == first.first_seen_ms < known[name].last_seen_ms


@pytest.mark.postgres
def test_two_clusters_without_cluster_get_names_of_their_own_in_one_database(
    east: SecureCluster, west: SecureCluster, postgres_url: str, poll: Poll
) -> None:
    _migrate(postgres_url)
    names = {}
    for cluster in (east, west):
        code, err = poll(cluster, postgres_url)
        assert code == 0, err
        names[kube_system_uid(cluster)] = f"cluster-{kube_system_uid(cluster)[:8]}"
    assert len(set(names.values())) == 2
    stored, known = _known(postgres_url)
    assert stored == sorted(names.values())
    assert {k.name: k.kube_system_uid for k in known.values()} == {
        name: uid for uid, name in names.items()
    }
    east_pods, west_pods = (_series(postgres_url, name) for name in names.values())
    assert east_pods and west_pods and east_pods != west_pods


@pytest.mark.postgres
def test_the_same_cluster_name_from_two_clusters_is_refused(
    east: SecureCluster, west: SecureCluster, postgres_url: str, poll: Poll
) -> None:
    _migrate(postgres_url)
    code, err = poll(east, postgres_url, "--cluster", "prod")
    assert code == 0, err
    code, err = poll(west, postgres_url, "--cluster", "prod")
    assert code == 2
    (line,) = err.strip().splitlines()
    east_uid, west_uid = kube_system_uid(east), kube_system_uid(west)
    assert (
        "holds the history of cluster prod recorded from another cluster (kube-system UID "
        f"{east_uid}; this one's is {west_uid})"
    ) in line
    assert "--cluster NAME" in line and "Traceback" not in err
    assert _known(postgres_url)[0] == ["prod"]
    # The first cluster, without --cluster, finds the name recorded beside its UID.
    code, err = poll(east, postgres_url)
    assert code == 0, err
    assert _known(postgres_url)[0] == ["prod"]


def test_without_the_rbac_to_read_kube_system_it_falls_back_with_one_warning(
    east: SecureCluster, west: SecureCluster, sqlite_url: str, poll: Poll
) -> None:
    scoped = [arg for ns in TEAM_NAMESPACES for arg in ("--namespace", ns)]
    code, err = poll(east, sqlite_url, *scoped, identity=TEAM_READER)
    assert code == 0, err
    assert "Traceback" not in err
    (warning,) = [line for line in err.splitlines() if "identity" in line]
    assert "cannot read this cluster's identity (the UID of namespace kube-system)" in warning
    assert "403 Forbidden" in warning and "resourceNames [kube-system]" in warning
    assert "Pass --cluster NAME" in warning
    assert _known(sqlite_url) == (["default"], {})
    # Named, it records under its name; the note says the name is not checked, no advice.
    code, err = poll(east, sqlite_url, "--cluster", "default", *scoped, identity=TEAM_READER)
    assert code == 0, err
    (note,) = [line for line in err.splitlines() if "identity" in line]
    assert "cannot check that --cluster default names no other cluster" in note
    assert "WARNING" not in note and "Pass --cluster" not in note


def test_without_its_identity_a_recorder_is_refused_by_another_clusters_database(
    east: SecureCluster, west: SecureCluster, sqlite_url: str, poll: Poll
) -> None:
    code, err = poll(west, sqlite_url, "--cluster", "west-1")
    assert code == 0, err
    scoped = [arg for ns in TEAM_NAMESPACES for arg in ("--namespace", ns)]
    code, err = poll(east, sqlite_url, *scoped, identity=TEAM_READER)
    assert code == 2
    warning, refusal = err.strip().splitlines()
    assert "cannot read this cluster's identity" in warning
    assert "holds the history of another cluster (west-1)" in refusal
    assert _known(sqlite_url)[0] == ["west-1"]


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (
            (200, b'{"kind":"Namespace","metadata":{"name":"kube-system"}}'),
            MalformedResponseError,
            "has no usable metadata.uid",
        ),
        ((200, b"<html>a proxy's login page</html>"), MalformedResponseError, "is not a Namespace"),
        (
            (200, b'{"metadata":{"uid":"' + b"x" * 300_000 + b'"}}'),
            MetricsApiResponseTooLarge,
            "namespace kube-system",
        ),
        (
            (404, b'{"kind":"Status","code":404}'),
            MetricsApiNotFound,
            "does not serve the namespace kube-system",
        ),
    ],
)
def test_an_unusable_answer_is_an_error_not_an_identity(
    reply: tuple[int, bytes], error: type[Exception], message: str
) -> None:
    """Bounded and checked: what is not a namespace with a UID names no cluster."""
    app = create_app(static={"/api/v1/namespaces/kube-system": reply})
    with SimulatorServer(app) as server:
        config = ClusterConfig(server=server.url)
        with MetricsClient(
            config, retry=RetryPolicy(max_attempts=1), max_response_bytes=MAX_NAMESPACE_BYTES
        ) as client:
            with pytest.raises(error, match=message):
                read_uid(client)
        assert cluster_uid(config, timeout_seconds=5) is None  # and never a traceback

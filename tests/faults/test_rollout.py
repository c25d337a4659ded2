"""A rolling upgrade on PostgreSQL, as processes: the previous release and this checkout side by
side on one database, against the simulator.

The previous release is a built artifact, ``tests/data/releases/recorder-0b6e0e8.tar.gz``
(``build.sh`` beside it; no git history or network needed), unpacked and run with this
interpreter and its dependencies. The steps are a Deployment's ``RollingUpdate`` with
``maxSurge: 1``: the old release migrates a new database (its init container) and leads; the
new pod's init container migrates the schema to this checkout's head while the old replica
runs and writes; the new replica starts and follows; the old one gets SIGTERM, exits 0, and the
new one leads within two intervals.

What it proves: the old replica writes on, without errors, on the schema the new one migrated
(0b6e0e8 says not ready on a later revision: see ``PREVIOUS_READY_ON_LATER_SCHEMA``); one
writer at any time (the new replica writes nothing while the old one leads); every node's
history is continuous across the whole rollout (no resolution missing between the first and
the last stored sample) and nothing is stored twice; the new replica ends as the leader and the
database at this checkout's head revision, however many migrations it has past 0004 (none
today; checked by hand with an added 0005).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from recorder.store.migrate import head_revision
from tests.faults.service import (
    Service,
    duplicates,
    gaps,
    migrate,
    role,
    running,
    stored_timestamps,
)
from tests.processes import recorder_env, run_recorder, wait_for

pytestmark = pytest.mark.slow

INTERVAL = 1.0
RESOLUTION_MS = 2000
RELEASES = Path(__file__).resolve().parents[1] / "data" / "releases"
PREVIOUS_RELEASE = "0b6e0e8"
PREVIOUS_SCHEMA = "0004"
"""The schema head of the previous release."""
PREVIOUS_READY_ON_LATER_SCHEMA = False
"""0b6e0e8 wants its own head exactly: on a later schema its ``/readyz`` is 503 ("schema:
outdated") while it polls and writes on, and a worker of its that restarts refuses to start.
The releases after it run on a later revision (``migrate.is_later``): True from the next one."""


@pytest.fixture
def slow_simulator() -> Iterator[str]:
    """A new metric resolution every 2 s, polled every 1 s: a poll missed at the handover
    costs nothing when the takeover is fast enough (as in test_elector)."""
    config = SimulatorConfig(nodes=3, pods=6, seed=11, resolution_seconds=2)
    with SimulatorServer(create_app(ClusterModel(config))) as server:
        yield server.url


@pytest.fixture
def previous_release(tmp_path: Path) -> dict[str, str]:
    """The environment that runs the previous release: its unpacked tree first on the path."""
    tree = tmp_path / "release"
    with tarfile.open(RELEASES / f"recorder-{PREVIOUS_RELEASE}.tar.gz") as archive:
        archive.extractall(tree, filter="data")
    env = {"PYTHONPATH": str(tree)}
    # Its own code and migrations, not this checkout's (nor an editable install's).
    said = subprocess.run(
        [
            sys.executable,
            "-c",
            "from recorder.store import migrate as m; "
            "print(m.__file__, m._migrations_dir(), m.head_revision())",
        ],
        cwd=tmp_path,
        env=recorder_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert said.returncode == 0, said.stderr
    module, migrations, schema = said.stdout.split()
    assert Path(module).is_relative_to(tree) and Path(migrations).is_relative_to(tree), said.stdout
    assert schema == PREVIOUS_SCHEMA
    return env


def revision(database_url: str) -> str:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
            return str(version.scalar_one())
    finally:
        engine.dispose()


def newest(database_url: str) -> int:
    """The newest sample every node has (the oldest of the nodes' newest)."""
    return min(max(v) for v in stored_timestamps(database_url).values())


def stores_on(database_url: str, resolutions: int, what: str) -> None:
    """Waits until every node has ``resolutions`` more samples than now."""
    before = newest(database_url)
    wait_for(
        lambda: newest(database_url) >= before + resolutions * RESOLUTION_MS,
        10 + resolutions * RESOLUTION_MS / 1000,
        what,
    )


def total(service: Service, name: str) -> float:
    """The sum of ``name``'s samples on ``/metrics``, whatever their labels."""
    text = httpx.get(f"{service.base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def no_errors(service: Service) -> None:
    output = service.output()
    assert "Traceback" not in output and " ERROR " not in output, output
    assert total(service, "recorder_poll_errors_total") == 0
    assert total(service, "recorder_samples_rejected_total") == 0
    assert total(service, "recorder_samples_dropped_total") == 0


def test_an_old_and_a_new_replica_side_by_side_during_a_rolling_upgrade(
    tmp_path: Path,
    slow_simulator: str,
    postgres_url: str,
    previous_release: dict[str, str],
    figure: object,
) -> None:
    head = head_revision()
    assert head is not None
    # The old pod's init container, then the old replica: it leads.
    done = run_recorder(
        ["migrate"], tmp_path, env={**previous_release, "RECORDER_DATABASE_URL": postgres_url}
    )
    assert done.returncode == 0, done.stderr
    assert revision(postgres_url) == PREVIOUS_SCHEMA
    with running(
        tmp_path, slow_simulator, postgres_url, interval="1s", env=previous_release, name="old"
    ) as old:
        wait_for(lambda: role(old) == "leader", 30, "the old replica to lead")
        wait_for(lambda: len(stored_timestamps(postgres_url)) == 3, 15, "every node stored")

        # The new pod's init container migrates while the old replica runs and writes on;
        # then the new replica starts beside it and follows.
        migrate(postgres_url)
        assert revision(postgres_url) == head
        migrated = newest(postgres_url)
        written = old.metric("recorder_samples_written_total")
        with running(tmp_path, slow_simulator, postgres_url, interval="1s", name="new") as new:
            wait_for(lambda: role(new).startswith("follower"), 30, "the new replica to follow")
            # The old replica writes on, on the migrated schema, and alone: one writer. (Two
            # resolutions after the migration, waited for: the new replica may follow within a
            # resolution of it.)
            wait_for(
                lambda: newest(postgres_url) >= migrated + 2 * RESOLUTION_MS,
                10 + 2 * RESOLUTION_MS / 1000,
                "the old replica to lead on beside the new one",
            )
            assert old.metric("recorder_samples_written_total") > written
            assert new.metric("recorder_samples_written_total") == 0
            assert (old.metric("recorder_leader"), new.metric("recorder_leader")) == (1, 0)
            assert role(old) == "leader"
            no_errors(old)
            ready = head == PREVIOUS_SCHEMA or PREVIOUS_READY_ON_LATER_SCHEMA
            wait_for(
                lambda: old.ready()[0] == (200 if ready else 503),
                5,
                f"the old replica's /readyz to say {'ready' if ready else 'schema outdated'}",
            )

            # The rollout ends the old pod: SIGTERM, a graceful exit; the new one leads.
            code, stopping = old.terminate()
            stopped = time.monotonic()
            assert code == 0, old.output()
            wait_for(lambda: role(new) == "leader", 10, "the new replica to take over")
            takeover = time.monotonic() - stopped
            stores_on(postgres_url, 2, "the new replica to store two more resolutions")

            stored = stored_timestamps(postgres_url)
            assert duplicates(stored) == 0
            assert gaps(stored, RESOLUTION_MS) == 0
            assert takeover <= 2 * INTERVAL + 0.5, takeover  # + the probe's own latency
            assert new.metric("recorder_leader") == 1
            assert new.metric("recorder_leader_takeovers_total") == 1
            status, checks = new.ready()
            assert status == 200 and checks["schema"] == "ok", checks
            no_errors(new)
            assert revision(postgres_url) == head
            code, _ = new.terminate()
            assert code == 0, new.output()
    figure(  # type: ignore[operator]
        stopping_seconds=round(stopping, 2),
        takeover_seconds=round(takeover, 2),
        samples_missing=0,
        resolutions=min(len(set(v)) for v in stored.values()),
    )

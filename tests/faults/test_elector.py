"""One writer among replicas, as processes: two ``recorder run`` on one PostgreSQL database
against the simulator, the leader killed with SIGKILL mid-run, or partitioned from the
database; a second ``recorder run`` on one SQLite file refused.

Figures the kill case proves (interval 1 s, the simulator's resolution 2 s): before the kill
the follower wrote nothing and exposes no usage gauges (``recorder_leader 0``); the follower
leads within two intervals of the kill; no resolution of any node is missing between the first
and last stored sample, and none is stored twice.

The partition case (the follower cut off too for the first two resolutions, so that nobody
stores them; the lease-bound takeover is ``tests/integration/test_store_leader.py``'s): the
follower leads within two intervals of reaching the database again; the deposed leader hands
what it fetched during the partition over to the new leader, which writes it: no resolution of
any node is missing across the takeover, none is stored twice, nothing is dropped
(``recorder_samples_dropped_total{reason="deposed"}`` stays 0).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from recorder.simulator import ClusterModel, SimulatorConfig, SimulatorServer, create_app
from tests.faults.service import (
    duplicates,
    gaps,
    migrate,
    role,
    running,
    stored_timestamps,
    usage_lines,
)
from tests.processes import run_recorder, wait_for
from tests.tcpproxy import FreezableProxy, freezable_proxy

pytestmark = pytest.mark.slow

INTERVAL = 1.0
RESOLUTION_MS = 2000


@pytest.fixture
def slow_simulator() -> Iterator[str]:
    """A new metric resolution every 2 s: polls every 1 s see each one twice, so a poll
    missed by a takeover costs nothing when the takeover is fast enough."""
    config = SimulatorConfig(nodes=3, pods=6, seed=11, resolution_seconds=2)
    with SimulatorServer(create_app(ClusterModel(config))) as server:
        yield server.url


def handed_over_waiting(database_url: str) -> int:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM handover")).scalar_one())
    finally:
        engine.dispose()


def test_the_leader_killed_the_follower_takes_over_losing_nothing(
    tmp_path: Path, slow_simulator: str, postgres_url: str, figure: object
) -> None:
    migrate(postgres_url)
    with running(tmp_path, slow_simulator, postgres_url, interval="1s", name="a") as a:
        wait_for(lambda: role(a) == "leader", 30, "replica a to lead")
        with running(tmp_path, slow_simulator, postgres_url, interval="1s", name="b") as b:
            wait_for(lambda: role(b).startswith("follower"), 30, "replica b to follow")
            wait_for(
                lambda: (
                    min((len(set(v)) for v in stored_timestamps(postgres_url).values()), default=0)
                    >= 2
                ),
                30,
                "two resolutions stored",
            )
            wait_for(lambda: bool(usage_lines(a)), 10, "the leader's usage gauges")
            assert usage_lines(b) == []
            assert b.metric("recorder_leader") == 0 and a.metric("recorder_leader") == 1
            assert b.metric("recorder_samples_written_total") == 0
            status, checks = b.ready()
            assert status == 200 and checks["poll"] == "not polling: another replica leads"
            # SIGKILL both processes of the leader, the writing worker first.
            os.kill(a.worker_pid(), signal.SIGKILL)
            os.kill(a.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            a.process.wait(10)
            wait_for(lambda: role(b) == "leader", 10, "replica b to take over")
            takeover = time.monotonic() - killed
            before = max(max(v) for v in stored_timestamps(postgres_url).values())
            wait_for(
                lambda: (
                    min(max(v) for v in stored_timestamps(postgres_url).values())
                    >= before + 2 * RESOLUTION_MS
                ),
                15,
                "the new leader to store two more resolutions",
            )
            stored = stored_timestamps(postgres_url)
            assert duplicates(stored) == 0
            assert gaps(stored, RESOLUTION_MS) == 0
            assert takeover <= 2 * INTERVAL + 0.5, takeover  # + the probe's own latency
            wait_for(lambda: bool(usage_lines(b)), 10, "the new leader's usage gauges")
            assert b.metric("recorder_leader") == 1
            assert b.metric("recorder_leader_takeovers_total") == 1
            assert "this replica is the leader now" in b.output()
            code, _ = b.terminate()
            assert code == 0
    figure(takeover_seconds=round(takeover, 2), samples_missing=0)  # type: ignore[operator]


def test_a_leader_partitioned_from_the_database_is_deposed_and_its_writes_refused(
    tmp_path: Path, slow_simulator: str, postgres_url: str, figure: object
) -> None:
    migrate(postgres_url)
    url = sqlalchemy.engine.make_url(postgres_url)
    host, port = url.host or "127.0.0.1", url.port or 5432
    with freezable_proxy(host, port) as proxy, freezable_proxy(host, port) as proxy_b:

        def through(chosen: FreezableProxy) -> str:
            return url.set(host="127.0.0.1", port=chosen.port).render_as_string(hide_password=False)

        with running(tmp_path, slow_simulator, through(proxy), interval="1s", name="a") as a:
            wait_for(lambda: role(a) == "leader", 30, "replica a to lead")
            with running(tmp_path, slow_simulator, through(proxy_b), interval="1s", name="b") as b:
                wait_for(lambda: role(b).startswith("follower"), 30, "replica b to follow")
                wait_for(
                    lambda: (
                        min(
                            (len(set(v)) for v in stored_timestamps(postgres_url).values()),
                            default=0,
                        )
                        >= 2
                    ),
                    30,
                    "two resolutions stored",
                )
                # b cannot reach the database either for two resolutions: nobody stores them,
                # a polls them into its buffer, and only its handover can bring them in.
                proxy_b.freeze()
                proxy.freeze()
                try:
                    wait_for(lambda: not usage_lines(a), 5, "a to withdraw its usage gauges")
                    time.sleep(2 * RESOLUTION_MS / 1000)
                    proxy_b.thaw()
                    thawed = time.monotonic()
                    wait_for(lambda: role(b) == "leader", 10, "replica b to take over")
                    takeover = time.monotonic() - thawed
                    time.sleep(RESOLUTION_MS / 1000)  # b polls; a polls on into its buffer
                finally:
                    proxy_b.thaw()
                    proxy.thaw()
                wait_for(lambda: role(a).startswith("follower"), 15, "a to find b leading")
                # a polled during the partition: it hands what it could not store over.
                wait_for(
                    lambda: a.metric("recorder_samples_handed_over_total") > 0,
                    10,
                    "a to hand its batches over",
                )
                wait_for(
                    lambda: handed_over_waiting(postgres_url) == 0,
                    15,
                    "b to write the handed-over batches",
                )
                before = max(max(v) for v in stored_timestamps(postgres_url).values())
                wait_for(
                    lambda: (
                        min(max(v) for v in stored_timestamps(postgres_url).values())
                        >= before + RESOLUTION_MS
                    ),
                    15,
                    "the new leader to store another resolution",
                )
                handed = a.metric("recorder_samples_handed_over_total")
                discarded = a.metric("recorder_samples_dropped_total", reason="deposed")
                stored = stored_timestamps(postgres_url)
                assert duplicates(stored) == 0  # a's late writes were refused
                # Continuous history per node across the takeover: what a fetched during the
                # partition filled the time before b's first poll.
                assert gaps(stored, RESOLUTION_MS) == 0
                assert discarded == 0 and handed > 0
                assert "handed over by replica" in b.output()
                assert a.metric("recorder_leader_depositions_total") == 1
                assert usage_lines(a) == [] and bool(usage_lines(b))
                # a's lease ended long ago: b's next checks (0.25 s each, the first one on a
                # connection the freeze broke), plus up to 1 s until /readyz shows it
                assert takeover <= 2 * INTERVAL + 1.0, takeover
                assert "another replica leads now" in a.output()
    figure(  # type: ignore[operator]
        takeover_seconds=round(takeover, 2),
        handed_over=handed,
        discarded=discarded,
        lost=gaps(stored, RESOLUTION_MS),
    )


def test_a_second_service_on_one_sqlite_file_is_refused(
    tmp_path: Path, slow_simulator: str
) -> None:
    url = f"sqlite:///{tmp_path / 'recorder.db'}"
    with running(tmp_path, slow_simulator, url, interval="1s", name="first"):
        second = run_recorder(
            ["run", "--api-url", slow_simulator, "--database-url", url, "--listen", "127.0.0.1:0"],
            cwd=tmp_path,
        )
    assert second.returncode != 0
    said = second.stdout + second.stderr
    assert "another recorder already writes to" in said, said
    assert "Traceback" not in said

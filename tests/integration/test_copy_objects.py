"""``recorder copy`` keeps what the workload features read: pods' workloads, requests and limits,
node resources, HPAs and the workloads' block statistics. A simulated cluster recorded through
the real poll path and object reader (``tests.recommend_support``) into SQLite is copied to a
fresh PostgreSQL database: the same recommendations, the same ``kind=workload`` history, still
answered by workload statistics. Copied again into a target whose chunks it must merge with,
the target's workload statistics of that block are dropped, and the history, read from the
samples, stays the same."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, update

from recorder.domain import DEFAULT_CLUSTER, HistoryQuery, QueryKind, Resource, SeriesFilter, Tier
from recorder.query import engine
from recorder.query.recommend import Report, Strategy, recommend
from recorder.query.workloads import WorkloadFilter
from recorder.store import Store, open_store, schema
from recorder.store.copy import HistoryCopier
from tests.recommend_support import T0, Recorded, recorded_cluster

HOUR_MS = 3_600_000
OBJECT_TABLES = (
    schema.pod_workloads,
    schema.container_resources,
    schema.node_resources,
    schema.hpas,
    schema.workload_stats,
    schema.workload_blocks,
)


@dataclass
class Source:
    url: str
    recorded: Recorded
    report: Report


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    url = f"sqlite:///{tmp_path_factory.mktemp('copy-objects') / 'source.db'}"
    store = open_store(url)
    try:
        store.migrate()
        with recorded_cluster(store) as recorded:
            report = recommend(store, WorkloadFilter(), Strategy(), recorded.end_ms)
        yield Source(url, recorded, report)
    finally:
        store.close()


def _rows(store: Store) -> dict[str, set[tuple[object, ...]]]:
    with store.engine.connect() as conn:
        return {t.name: {tuple(r) for r in conn.execute(select(t))} for t in OBJECT_TABLES}


def _deployments(store: Store) -> list[tuple[str, str]]:
    pw = schema.pod_workloads
    with store.engine.connect() as conn:
        found = conn.execute(
            select(pw.c.namespace, pw.c.workload_name)
            .distinct()
            .where(pw.c.workload_kind == "Deployment")
        ).all()
    return sorted((row.namespace, row.workload_name) for row in found)


def _first_hour(store: Store, namespace: str, name: str) -> tuple[Tier, list[object]]:
    where = SeriesFilter(
        QueryKind.WORKLOAD, namespace=namespace, workload_kind="Deployment", workload=name
    )
    start = int(T0 * 1000)
    result = engine.history(
        store,
        HistoryQuery(Resource.CPU, where, start, start + HOUR_MS - 1, HOUR_MS),
        max_points=10_000,
        interval_ms=60_000,
    )
    return result.tier, [s.points for s in result.series]


def _copy(source: Store, target: Store) -> object:
    return HistoryCopier(source, target).run()


def test_a_copy_keeps_the_workloads_requests_and_their_statistics(
    source: Source, postgres_url: str
) -> None:
    origin, target = open_store(source.url), open_store(postgres_url)
    try:
        target.migrate()
        report = HistoryCopier(origin, target).run()
        assert report.objects_copied > 0 and report.workload_stats_copied > 0
        assert report.workload_blocks_dropped == 0
        copied, held = _rows(target), _rows(origin)
        for table in OBJECT_TABLES:
            assert held[table.name], table.name  # the scenario holds some of each
            assert copied[table.name] == held[table.name], table.name
        again = recommend(target, WorkloadFilter(), Strategy(), source.recorded.end_ms)
        assert again == source.report
        deployments = _deployments(target)
        assert deployments
        for namespace, name in deployments:
            tier, points = _first_hour(target, namespace, name)
            assert tier is Tier.STATISTICS and points  # workload statistics answer it
            assert (tier, points) == _first_hour(origin, namespace, name)
    finally:
        origin.close()
        target.close()


def test_a_merge_drops_the_target_s_stale_workload_statistics(
    source: Source, tmp_path: Path
) -> None:
    origin, target = open_store(source.url), open_store(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        target.migrate()
        HistoryCopier(origin, target).run()
        namespace, name = _deployments(target)[0]
        before = _first_hour(origin, namespace, name)
        # The target misses one container chunk of that namespace's first block: copying
        # again inserts it beside the target's own chunks, whose workload sums lack it.
        c, s, wb = schema.chunks, schema.series, schema.workload_blocks
        block = int(T0 * 1000)
        with target.engine.begin() as conn:
            sid = conn.execute(
                select(s.c.id)
                .join(c, c.c.series_id == s.c.id)
                .where(s.c.namespace == namespace, s.c.kind == "container")
                .where(c.c.block_start_ms == block)
                .limit(1)
            ).scalar_one()
            conn.execute(c.delete().where(c.c.series_id == sid, c.c.block_start_ms == block))
            # The target saw one pod later, as another workload, and an HPA earlier: the copy
            # keeps the workload first seen (the source's) and the HPA seen last (the source's).
            pw, hp = schema.pod_workloads, schema.hpas
            pod = conn.execute(select(pw).limit(1)).one()
            conn.execute(
                update(pw)
                .where(pw.c.namespace == pod.namespace, pw.c.pod == pod.pod)
                .values(workload_name="other", first_seen_ms=pod.first_seen_ms + 1)
            )
            conn.execute(update(hp).values(target_name="other", since_ms=hp.c.since_ms - 1))
        report = HistoryCopier(origin, target).run()
        assert report.chunks_copied == 1 and report.workload_blocks_dropped >= 1
        assert _rows(target)["pod_workloads"] == _rows(origin)["pod_workloads"]
        assert _rows(target)["hpas"] == _rows(origin)["hpas"]
        with target.engine.connect() as conn:
            marked = conn.execute(
                select(wb.c.namespace).where(
                    wb.c.cluster == DEFAULT_CLUSTER, wb.c.block_start_ms == block
                )
            ).scalars()
            assert namespace not in set(marked)
        assert _first_hour(target, namespace, name)[1] == before[1]  # from the samples now
    finally:
        origin.close()
        target.close()

"""``recorder delete``: one cluster's or one namespace's history deleted from a database that
holds two clusters (head rows, chunks, rollups and the rows keyed by cluster), the rest
untouched, on SQLite and PostgreSQL; nothing without ``--yes``."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from recorder.cli import main
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store, schema
from recorder.store.clusters import known_clusters, record_identity

HOUR_MS = 3_600_000
T0 = 1_714_550_400_000  # a block start


def _fill(store: Store) -> None:
    """Clusters a and b, each with namespaces x and y and a node, an hour compacted (chunks,
    pods' series, rollups) and samples in the head."""
    for cluster in ("a", "b"):
        for offset in (0, HOUR_MS + 60_000):
            samples = tuple(
                Sample(
                    SeriesKey.for_container(ns, f"{ns}-pod", "c", cluster),
                    T0 + offset + i * 30_000,
                    30_000,
                    10**8,
                    2**20,
                )
                for ns in ("x", "y")
                for i in range(3)
            )
            store.write(Batch(Kind.CONTAINER, samples), now_ms=T0 + offset)
            node = Sample(SeriesKey.for_node("n1", cluster), T0 + offset, 30_000, 10**9, 2**30)
            store.write(Batch(Kind.NODE, (node,)), now_ms=T0 + offset)
    store.maintain(now_ms=T0 + HOUR_MS + HOUR_MS // 2, grace_ms=0)


def _held(store: Store) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(cluster, namespace) -> (series, head rows, chunks)."""
    s, h, c = schema.series, schema.samples_head, schema.chunks
    out = {}
    with store.engine.connect() as conn:
        for cluster, namespace, count in conn.execute(
            select(s.c.cluster, s.c.namespace, func.count()).group_by(s.c.cluster, s.c.namespace)
        ):
            where = (s.c.cluster == cluster) & (s.c.namespace == namespace)
            head = conn.execute(
                select(func.count()).select_from(h.join(s, h.c.series_id == s.c.id)).where(where)
            ).scalar_one()
            chunks = conn.execute(
                select(func.count()).select_from(c.join(s, c.c.series_id == s.c.id)).where(where)
            ).scalar_one()
            out[(cluster, namespace)] = (count, head, chunks)
    return out


def test_a_namespace_then_a_cluster_is_deleted_and_nothing_else(
    store: Store, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store)
    with store.engine.begin() as conn:  # each cluster's identity, as in-cluster recorders keep
        for cluster in ("a", "b"):
            record_identity(conn, cluster, f"uid-{cluster}", T0)
    before = _held(store)
    assert set(before) == {(c, n) for c in "ab" for n in ("", "x", "y")}
    assert all(series and head and chunks for series, head, chunks in before.values())
    url = ["--database-url", database_url]

    assert main(["delete", *url, "--cluster", "a", "--namespace", "x"]) == 2
    assert "run again with --yes" in capsys.readouterr().err
    assert _held(store) == before

    assert main(["delete", *url, "--cluster", "a", "--namespace", "x", "--yes"]) == 0
    with store.engine.connect() as conn:
        assert set(known_clusters(conn)) == {"a", "b"}  # a namespace's deletion keeps it
    assert "deleted namespace x of cluster a" in capsys.readouterr().out
    after = _held(store)
    assert set(after) == set(before) - {("a", "x")}
    assert all(after[key] == before[key] for key in after)

    assert main(["delete", *url, "--cluster", "a", "--yes"]) == 0
    assert set(_held(store)) == {("b", ""), ("b", "x"), ("b", "y")}
    with store.engine.connect() as conn:
        assert set(known_clusters(conn)) == {"b"}  # the name is free for another cluster
        for table in (
            schema.pod_labels,
            schema.namespace_rollups,
            schema.node_resources,
            schema.clusters,
        ):
            clusters = set(conn.execute(select(table.c.cluster).distinct()).scalars())
            assert "a" not in clusters, table.name

    assert main(["delete", *url, "--cluster", "a", "--yes"]) == 0
    assert "nothing to delete" in capsys.readouterr().out
    assert main(["delete", *url, "--cluster", "", "--yes"]) == 2

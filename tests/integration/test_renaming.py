"""``recorder copy --as-cluster``: a single-cluster SQLite history brought into a database that
already holds another cluster, under a chosen name, on both target databases; the source
untouched, no scratch file left, a several-cluster or PostgreSQL source refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from recorder.cli import main
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store, open_store, schema

T0 = 1_714_550_400_000


def _record(store: Store, cluster: str, namespaces: tuple[str, ...]) -> None:
    samples = tuple(
        Sample(
            SeriesKey.for_container(ns, "p", "c", cluster), T0 + i * 30_000, 30_000, 10**8, 2**20
        )
        for ns in namespaces
        for i in range(4)
    )
    store.write(Batch(Kind.CONTAINER, samples), now_ms=T0)


def _clusters(store: Store) -> dict[str, int]:
    s, h = schema.series, schema.samples_head
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.c.cluster, func.count())
            .select_from(h.join(s, h.c.series_id == s.c.id))
            .group_by(s.c.cluster)
        )
        return {cluster: count for cluster, count in rows}


def _sqlite(path: Path, *clusters: str) -> str:
    url = f"sqlite:///{path}"
    store = open_store(url)
    store.migrate()
    for cluster in clusters:
        _record(store, cluster, ("x", "y"))
    store.close()
    return url


def test_a_sqlite_history_lands_under_the_chosen_cluster(
    store: Store, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store, "eu-2", ("x",))
    source = _sqlite(tmp_path / "laptop.db", "default")
    code = main(["copy", "--from", source, "--to", database_url, "--as-cluster", "eu-1"])
    assert code == 0
    assert "as cluster eu-1" in capsys.readouterr().out
    assert _clusters(store) == {"eu-1": 8, "eu-2": 4}
    again = main(["copy", "--from", source, "--to", database_url, "--as-cluster", "eu-1"])
    assert again == 0
    assert _clusters(store) == {"eu-1": 8, "eu-2": 4}  # nothing twice
    original = open_store(source)
    assert _clusters(original) == {"default": 8}
    original.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("laptop")) == [
        "laptop.db"
    ]


def test_only_a_single_cluster_sqlite_history_is_renamed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _sqlite(tmp_path / "two.db", "a", "b")
    target = f"sqlite:///{tmp_path / 'fleet.db'}"
    assert main(["copy", "--from", source, "--to", target, "--as-cluster", "c"]) == 2
    assert "several clusters" in capsys.readouterr().err
    assert not (tmp_path / "two.db.as-cluster.tmp").exists()
    pg = "postgresql+psycopg://u@127.0.0.1:1/x"
    assert main(["copy", "--from", pg, "--to", target, "--as-cluster", "c"]) == 2
    assert "SQLite file" in capsys.readouterr().err
    single = _sqlite(tmp_path / "one.db", "a")
    assert main(["copy", "--from", single, "--to", target, "--as-cluster", "Not A Label"]) == 2
    assert "--as-cluster must be" in capsys.readouterr().err

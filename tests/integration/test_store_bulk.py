"""New series and pods' labels in bulk (``recorder.store.bulk``): one ``COPY`` on PostgreSQL, the
driver's ``executemany`` on SQLite, in a savepoint, and the writer's upserts whenever the
database refuses it, on real databases (each test on both).

What each test proves:
- ``insert_new`` stores the rows in the caller's transaction (rolled back with it); a row
  already stored or a value the column refuses leaves nothing of them and the transaction
  usable; any other failure (a table that does not exist) is raised;
- the writer's first write of a large cluster goes in at once (series and labels),
  later changed labels of held pods as upserts beside new pods' copy, and the rows stored are
  the same as the upserts store: ids unique, first and last seen at the sample's time, each
  pod's labels and the time they were written;
- series and labels the maps forgot (stored, not held) beside new ones: the copy is refused,
  the upserts store the new ones and find the old ones' ids (no second series row).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select, text

from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.store import Store, bulk, open_store, schema

T0 = 1_700_000_000_000
COLUMNS = ("cluster", "namespace", "pod", "labels_json", "updated_ms")


def label_rows(pods: range, at: int = T0) -> list[tuple[str, str, str, str, int]]:
    return [("default", "shop", f"web-{p}", '{"app":"web"}', at) for p in pods]


def stored_labels(store: Store) -> dict[str, tuple[dict[str, str], int]]:
    pl = schema.pod_labels
    with store.engine.connect() as conn:
        rows = conn.execute(select(pl.c.pod, pl.c.labels_json, pl.c.updated_ms))
        return {pod: (json.loads(text_), int(ms)) for pod, text_, ms in rows}


def count(store: Store, table: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_insert_new_stores_the_rows(store: Store) -> None:
    with store.engine.begin() as conn:
        assert bulk.insert_new(conn, "pod_labels", COLUMNS, iter(label_rows(range(3_000))))
    assert count(store, schema.pod_labels) == 3_000
    assert stored_labels(store)["web-2999"] == ({"app": "web"}, T0)


def test_the_rows_go_or_stay_with_the_callers_transaction(store: Store) -> None:
    # On SQLite the driver begins its transaction at the first write: the savepoint must not
    # begin (and commit) one of its own.
    with pytest.raises(LookupError), store.engine.begin() as conn:
        assert bulk.insert_new(conn, "pod_labels", COLUMNS, label_rows(range(10)))
        raise LookupError("the caller's next step failed")
    assert count(store, schema.pod_labels) == 0


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(label_rows(range(5, 6)), id="a row already stored"),
        pytest.param([("default", "shop", "p\ud800", "{}", T0)], id="a lone surrogate"),
    ],
)
def test_a_refused_insert_leaves_nothing_and_the_transaction_usable(
    store: Store, refused: Sequence[tuple[Any, ...]]
) -> None:
    with store.engine.begin() as conn:
        assert bulk.insert_new(conn, "pod_labels", COLUMNS, label_rows(range(10)))
    with store.engine.begin() as conn:
        rows = [*label_rows(range(100, 200)), *refused, *label_rows(range(200, 300))]
        assert bulk.insert_new(conn, "pod_labels", COLUMNS, iter(rows)) is False
        # The transaction goes on: what follows the refused rows is committed.
        conn.execute(text("UPDATE pod_labels SET updated_ms = 1 WHERE pod = 'web-3'"))
    assert count(store, schema.pod_labels) == 10
    assert stored_labels(store)["web-3"][1] == 1


def test_a_value_too_long_for_postgresql_is_refused_as_content(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            rows = [*label_rows(range(3)), ("default", "shop", "p" * 254, "{}", T0)]
            assert bulk.insert_new(conn, "pod_labels", COLUMNS, rows) is False
        assert count(store, schema.pod_labels) == 0
    finally:
        store.close()


def test_any_other_failure_is_raised(store: Store) -> None:
    if store.dialect == "postgresql":
        import psycopg

        expected: type[Exception] = psycopg.errors.UndefinedTable
    else:
        expected = sqlite3.OperationalError
    with pytest.raises(expected, match="no_such_table"), store.engine.begin() as conn:
        bulk.insert_new(conn, "no_such_table", COLUMNS, label_rows(range(3)))


class Copies:
    """``bulk.insert_new`` as it is, each call's table, row count and answer recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        real = bulk.insert_new

        def recorded(conn: Any, table: str, columns: Any, rows: Any) -> bool:
            rows = list(rows)
            answer = real(conn, table, columns, rows)
            self.calls.append((table, len(rows), answer))
            return answer

        monkeypatch.setattr(bulk, "insert_new", recorded)


def poll(at: int, pods: range, value: str = "web") -> Batch:
    samples = tuple(
        Sample(SeriesKey.for_container(f"ns-{p % 7}", f"web-{p}", c), at, 15_000, p, 1)
        for p in pods
        for c in ("app", "proxy")
    )
    return Batch(
        Kind.CONTAINER, samples, {(f"ns-{p % 7}", f"web-{p}"): {"app": value} for p in pods}
    )


def series_rows(store: Store) -> dict[tuple[str, str], tuple[int, int, int]]:
    s = schema.series
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(s.c.pod, s.c.container, s.c.id, s.c.first_seen_ms, s.c.last_seen_ms)
        )
        return {(pod, container): (sid, first, last) for pod, container, sid, first, last in rows}


def test_a_first_write_goes_in_by_copy_and_stores_what_the_upserts_store(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = Copies(monkeypatch)
    result = store.write(poll(T0, range(6_000)), now_ms=T0)
    assert (result.written, result.rejected) == (12_000, ())
    assert copies.calls == [("series", 12_000, True), ("pod_labels", 6_000, True)]
    rows = series_rows(store)
    assert len(rows) == 12_000
    assert len({sid for sid, _, _ in rows.values()}) == 12_000
    assert {(first, last) for _, first, last in rows.values()} == {(T0, T0)}
    # Each sample under its own series: the ids held are the ids stored.
    held = {(key.pod, key.container): sid for key, sid in store._writer._ids.items()}
    assert held == {pc: sid for pc, (sid, _, _) in rows.items()}
    assert stored_labels(store)["web-5999"] == ({"app": "web"}, T0)
    # The next poll: 100 new pods copied, 50 held pods' changed labels upserted beside them.
    copies.calls.clear()
    later = T0 + 15_000
    batch = poll(later, range(6_100))
    changed = {
        ref: ({"app": "v2"} if int(ref[1][4:]) < 50 else value)
        for ref, value in batch.pod_labels.items()
    }
    result = store.write(Batch(Kind.CONTAINER, batch.samples, changed), now_ms=later)
    assert (result.written, result.rejected) == (12_200, ())
    assert copies.calls == [("series", 200, True), ("pod_labels", 100, True)]
    labels = stored_labels(store)
    assert labels["web-0"] == ({"app": "v2"}, later)
    assert labels["web-6099"] == ({"app": "web"}, later)
    assert labels["web-50"] == ({"app": "web"}, T0)
    assert count(store, schema.series) == 12_200
    assert count(store, schema.samples_head) == 24_200


def test_rows_the_maps_forgot_refuse_the_copy_and_the_upserts_find_them(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write(poll(T0, range(100)), now_ms=T0)
    before = series_rows(store)
    writer = store._writer
    writer._ids.clear()  # as the maps forget series not written for an hour
    writer._labels.clear()
    copies = Copies(monkeypatch)
    later = T0 + 15_000
    result = store.write(poll(later, range(50, 150), value="v2"), now_ms=later)
    assert (result.written, result.rejected) == (200, ())
    assert copies.calls == [("series", 200, False), ("pod_labels", 100, False)]
    after = series_rows(store)
    assert len(after) == 300
    assert all(after[pc] == before[pc] for pc in before)  # old series kept their ids
    held = {(key.pod, key.container): sid for key, sid in writer._ids.items()}
    assert held == {pc: after[pc][0] for pc in held}
    assert {(f"web-{p}", c) for p in range(50, 150) for c in ("app", "proxy")} <= set(held)
    labels = stored_labels(store)
    assert labels["web-50"] == ({"app": "v2"}, later)
    assert labels["web-149"] == ({"app": "v2"}, later)
    assert labels["web-49"] == ({"app": "web"}, T0)

"""The writer (``recorder.store.writer``) keeps faults of content where they start, on real
databases: what it checks itself, and what the database refuses, isolated by bisection.

Figures each test proves:
- unstorable values (a 600 h window, 2^63 cores, a 254-character name, a 64-character
  namespace) among 200 good samples: 200 stored, 6 rejected, none sent;
- a 5,000-character name, a NUL in a name and a NUL in a label value among 1,000 good samples:
  1,000 stored, 3 rejected; later batches written normally (before: every write stopped);
- rows the database itself refuses (a rule the writer does not know) among 1,000 good samples:
  1,000 stored, 4 samples and 1 pod's labels rejected by bisection in a bounded number of
  attempts;
- random batches mixing duplicates within a batch, repeats of the stored newest, older samples
  and new series write the rows, and skip the samples, that a plain reading of the rule
  (``Reference``) does, whichever path (the fast one or the general one) each sample takes.

The database's own faults (locks, timeouts, outages) are in test_store_engine.py.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from recorder.buffer import decode_batch, encode_batch
from recorder.domain import Batch, Kind, Sample, Samples, SeriesKey
from recorder.store import Store, open_store, schema
from recorder.store.newest import NewestTable
from recorder.store.writer import (
    DATABASE_REJECTED,
    FORGET_AFTER_MS,
    INVALID_TEXT,
    LOAD_HORIZON_MS,
    MAX_ISOLATED,
    OUT_OF_RANGE,
    SampleWriter,
    _fresh_split,
    digest,
    digests,
    labels_digest,
)

T0 = 1_700_000_000_000


def good(count: int, ts: int = T0) -> list[Sample]:
    return [
        Sample(
            SeriesKey.for_container("shop", f"web-{i % 50}", f"c{i // 50}"),
            ts,
            15_000,
            1_000 + i,
            i,
        )
        for i in range(count)
    ]


def head_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.samples_head)).scalar_one())


def series_names(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(select(schema.series.c.pod)).scalars())


def test_unstorable_values_are_rejected_alone_and_never_sent(store: Store) -> None:
    bad = [
        Sample(SeriesKey.for_container("shop", "w", "long-window"), T0, 600 * 3_600_000, 1, 1),
        Sample(SeriesKey.for_container("shop", "w", "cpu"), T0, 1, 2**63, 1),
        Sample(SeriesKey.for_container("shop", "w", "memory"), T0, 1, 1, -(2**63) - 1),
        Sample(SeriesKey.for_container("shop", "w", "ts"), 2**63, 1, 1, 1),
        Sample(SeriesKey.for_container("shop", "w", "x" * 254), T0, 1, 1, 1),
        Sample(SeriesKey.for_container("n" * 64, "w", "app"), T0, 1, 1, 1),
    ]
    samples = good(100) + bad + good(100, T0 + 15_000)
    result = store.write(Batch(Kind.CONTAINER, tuple(samples)), now_ms=T0)
    assert (result.written, result.skipped_duplicates) == (200, 0)
    assert [(r.reason, r.name.split("/")[-1][:12]) for r in result.rejected] == [
        (OUT_OF_RANGE, "long-window"),
        (OUT_OF_RANGE, "cpu"),
        (OUT_OF_RANGE, "memory"),
        (OUT_OF_RANGE, "ts"),
        (OUT_OF_RANGE, "xxxxxxxxxxxx"),
        (OUT_OF_RANGE, "app"),
    ]
    assert result.rejected[0].detail == (
        "window_ms 2160000000 is outside the column's range [-2147483648, 2147483647]"
    )
    assert "254 characters" in result.rejected[4].detail
    assert len(result.rejected[4].name) < 120  # the name is shown cut, not 254 characters
    assert head_count(store) == 200
    assert series_names(store) == {f"web-{i}" for i in range(50)}  # nothing of "w" was sent


def test_a_refused_name_or_label_does_not_stop_writing(store: Store) -> None:
    """Issue 10 row 3: a 5,000-character or NUL-containing name used to stop every write."""
    long_name = SeriesKey.for_container("shop", "p" * 5_000, "app")
    nul_name = SeriesKey.for_container("shop", "nul", "a\x00b")
    samples = [*good(500), Sample(long_name, T0, 1, 1, 1), Sample(nul_name, T0, 1, 1, 1)]
    samples += good(500, T0 + 15_000)
    labels = {("shop", f"web-{i}"): {"app": "web"} for i in range(50)}
    labels[("shop", "web-7")] = {"app": "we\x00b"}
    result = store.write(Batch(Kind.CONTAINER, tuple(samples), labels), now_ms=T0)
    assert result.written == 1_000
    assert sorted((r.reason, r.name, r.detail) for r in result.rejected) == [
        (INVALID_TEXT, "nul/a\\x00b", "container 'a\\x00b' holds NUL or a lone surrogate"),
        (INVALID_TEXT, "web-7", "labels: 'we\\x00b' holds NUL or a lone surrogate"),
        (
            OUT_OF_RANGE,
            f"{'p' * 80}... (5000 characters)/app",
            "pod has 5000 characters; the column holds 253",
        ),
    ]
    assert head_count(store) == 1_000
    later = store.write(Batch(Kind.CONTAINER, tuple(good(1_000, T0 + 30_000))), now_ms=T0)
    assert (later.written, later.rejected) == (1_000, ())
    with store.engine.connect() as conn:
        stored_labels = conn.execute(select(func.count()).select_from(schema.pod_labels))
        assert stored_labels.scalar_one() == 49


def refuse_in_database(store: Store) -> None:
    """Rules the writer's checks know nothing of: the database refuses CPU 666, the pod
    "poison" and any labels holding "refuse"."""
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE samples_head ADD CONSTRAINT no_666 CHECK (cpu_nanocores <> 666)"
            )
            conn.exec_driver_sql(
                "ALTER TABLE series ADD CONSTRAINT no_poison CHECK (pod <> 'poison')"
            )
            conn.exec_driver_sql(
                "ALTER TABLE pod_labels ADD CONSTRAINT no_refuse "
                "CHECK (labels_json NOT LIKE '%%refuse%%')"
            )
            return
        for table, condition in (
            ("samples_head", "NEW.cpu_nanocores = 666"),
            ("series", "NEW.pod = 'poison'"),
            ("pod_labels", "NEW.labels_json LIKE '%refuse%'"),
        ):
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN {condition} "
                f"BEGIN SELECT RAISE(ABORT, '{table} refused by a test rule'); END"
            )


def test_rows_the_database_refuses_are_found_by_bisection(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_in_database(store)
    offenders = [
        Sample(SeriesKey.for_container("shop", "web-1", "c1"), T0 + 1, 15_000, 666, 1),
        Sample(SeriesKey.for_container("shop", "poison", "app"), T0, 15_000, 1, 1),
        Sample(SeriesKey.for_container("shop", "web-2", "c3"), T0 + 2, 15_000, 666, 1),
        Sample(SeriesKey.for_node("node-a"), T0, 15_000, 666, 1),
    ]
    samples = good(300) + offenders[:2] + good(400, T0 + 15_000) + offenders[2:]
    samples += good(300, T0 + 30_000)
    labels = {("shop", "web-1"): {"app": "web"}, ("shop", "web-2"): {"app": "refuse"}}
    with caplog.at_level(logging.WARNING, logger="recorder.store.writer"):
        result = store.write(Batch(Kind.CONTAINER, tuple(samples), labels), now_ms=T0)
    assert result.written == 1_000
    assert len(result.rejected) == 5
    assert {r.reason for r in result.rejected} == {DATABASE_REJECTED}
    assert sorted(r.name for r in result.rejected) == [
        "node-a",
        "poison/app",
        "web-1/c1",
        "web-2",
        "web-2/c3",
    ]
    for rejection in result.rejected:
        # The database's first message line only: no SQL, no parameters, no row values.
        assert "\n" not in rejection.detail and "[SQL" not in rejection.detail
        assert (
            "no_666" in rejection.detail
            or "refused" in rejection.detail
            or ("no_poison" in rejection.detail or "no_refuse" in rejection.detail)
        )
    assert [r.detail.startswith("labels: ") for r in result.rejected].count(True) == 1
    attempts = int(caplog.records[-1].getMessage().rsplit("after ", 1)[1].split()[0])
    assert attempts <= 2 * 5 * 11 + 2  # 5 offenders, log2(1004) < 11 levels, both halves
    assert head_count(store) == 1_000
    assert "poison" not in series_names(store)
    later = store.write(Batch(Kind.CONTAINER, tuple(good(1_000, T0 + 45_000))), now_ms=T0)
    assert (later.written, later.rejected) == (1_000, ())


def test_ids_of_series_created_by_a_refused_attempt_are_not_kept(store: Store) -> None:
    """The writer holds new series' ids during the transaction that creates them (not a
    copy of the whole map, 10 MB at 150,000 pods): an attempt the database refuses after it
    created them takes them out again, so the next attempt creates them anew and every row
    names a series that exists. Figure: 500 new series, one sample refused: 499 rows, each of
    a stored series, and every id held is stored."""
    refuse_in_database(store)
    samples = [
        Sample(SeriesKey.for_container("shop", f"new-{i}", "app"), T0, 15_000, i + 1, 1)
        for i in range(500)
    ]
    samples[250] = Sample(samples[250].key, T0, 15_000, 666, 1)  # the head refuses it
    result = store.write(Batch(Kind.CONTAINER, tuple(samples)), now_ms=T0)
    assert (result.written, len(result.rejected)) == (499, 1)
    with store.engine.connect() as conn:
        stored_ids = set(conn.execute(select(schema.series.c.id)).scalars())
        row_ids = set(conn.execute(select(schema.samples_head.c.series_id)).scalars())
    assert len(row_ids) == 499
    assert row_ids <= stored_ids, sorted(row_ids - stored_ids)[:5]
    held = {sid for key, sid in store._writer._ids.items() if key.pod.startswith("new-")}
    assert held <= stored_ids, sorted(held - stored_ids)[:5]


def test_the_reload_and_the_new_series_scan_read_postgresql_a_part_at_a_time(
    postgres_url: str,
) -> None:
    """A client-side cursor holds a whole result in libpq until its last row is read: a
    restart's reload at 150,000 pods peaked 38 MB higher on PostgreSQL than on SQLite (207
    against 169 MiB), 176 MiB once read through server-side cursors. Every read of the reload
    and the scan of the series a write creates go through one (a named cursor)."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        labels = {("shop", f"web-{i % 50}"): {"app": "web"} for i in range(50)}
        store.write(Batch(Kind.CONTAINER, tuple(good(200)), labels), now_ms=T0)
        reads: list[tuple[str, str | None]] = []

        def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                reads.append((statement, getattr(cursor, "name", None)))

        event.listen(store.engine, "after_cursor_execute", seen)
        store._writer.load()
        store.write(Batch(Kind.CONTAINER, tuple(good(400, T0 + 15_000))), now_ms=T0)
        event.remove(store.engine, "after_cursor_execute", seen)
    finally:
        store.close()
    large = [
        (statement, name)
        for statement, name in reads
        if "max(" not in statement.lower() and ("series" in statement or "pod_labels" in statement)
    ]
    assert len(large) >= 5, reads  # four reads of the reload, the new series' scan
    assert all(name for _statement, name in large), [s for s, n in large if not n]


def test_a_database_that_refuses_everything_costs_bounded_attempts(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_in_database(store)
    samples = [Sample(SeriesKey.for_node(f"n{i}"), T0, 1, 666, 1) for i in range(2_000)]
    with caplog.at_level(logging.WARNING, logger="recorder.store.writer"):
        result = store.write(Batch(Kind.NODE, tuple(samples)), now_ms=T0)
    assert (result.written, len(result.rejected)) == (0, 2_000)
    attempts = int(caplog.records[-1].getMessage().rsplit("after ", 1)[1].split()[0])
    assert attempts <= 2 * MAX_ISOLATED * 11 + 2


def test_the_labels_held_are_keyed_by_the_batch_own_pod_references(store: Store) -> None:
    # The poller hands each pod's (namespace, pod) as one object poll after poll; the writer's
    # map of stored labels keeps that object as its key, not a tuple of its own per pod.
    labels = {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(50)}
    store.write(Batch(Kind.CONTAINER, tuple(good(100)), labels), now_ms=T0)
    held = store._writer._labels["default"]
    refs = {ref: ref for ref in labels}
    assert held.keys() == labels.keys()
    assert all(refs[ref] is ref for ref in held)


def test_after_a_restart_the_batch_keys_and_equal_labels_are_adopted(store: Store) -> None:
    # What the poller hands every poll (the same key and label objects) becomes what the
    # writer holds, so the next poll's lookups stop at identity; nothing is written twice.
    labels = {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(50)}
    store.write(Batch(Kind.CONTAINER, tuple(good(100)), labels), now_ms=T0)
    # As after a restart: a new writer reads its maps back from the database.
    writer = store._writer = SampleWriter(store.engine, store.head)
    again = tuple(good(100, T0 + 15_000))
    same_labels = {ref: dict(value) for ref, value in labels.items()}
    result = store.write(Batch(Kind.CONTAINER, again, same_labels), now_ms=T0 + 15_000)
    assert (result.written, result.rejected) == (100, ())
    held = {key: key for key in writer._ids}
    assert all(held[s.key] is s.key for s in again)
    assert all(writer._labels["default"][ref] is value for ref, value in same_labels.items())
    assert head_count(store) == 200
    # A later batch's equal copy (read back from the buffer after an outage) is not adopted:
    # the poller's object stays the one kept, so no second copy of every pod's labels.
    copies = {ref: dict(value) for ref, value in labels.items()}
    later = Batch(Kind.CONTAINER, tuple(good(100, T0 + 30_000)), copies)
    assert store.write(later, now_ms=T0 + 30_000).written == 100
    assert all(writer._labels["default"][ref] is value for ref, value in same_labels.items())


def labels_updated(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.pod_labels.c.pod, schema.pod_labels.c.updated_ms))
        return {pod: int(updated) for pod, updated in rows}


def test_after_a_restart_only_the_labels_that_changed_are_written(store: Store) -> None:
    # A restart reads back a digest of each pod's stored labels, not the labels: the first
    # poll after it rewrites only the pods whose labels differ, whatever formatting stored
    # the equal ones (a JSON column answers with its own spacing), and keeps its own objects.
    labels = {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(50)}
    store.write(Batch(Kind.CONTAINER, tuple(good(100)), labels), now_ms=T0)
    with store.engine.begin() as conn:
        conn.execute(
            schema.pod_labels.update()
            .where(schema.pod_labels.c.pod == "web-7")
            .values(labels_json='{"i": "7",  "app": "web"}')
        )
    writer = store._writer = SampleWriter(store.engine, store.head)
    writer._meet({"default"})  # reads the maps, as the first write does
    assert all(type(held) is bytes for held in writer._labels["default"].values())
    polled = {ref: dict(value) for ref, value in labels.items()}
    polled[("shop", "web-3")] = {"app": "web", "i": "3", "track": "canary"}
    polled[("shop", "web-4")] = {"app": "web"}
    later = T0 + 15_000
    result = store.write(Batch(Kind.CONTAINER, tuple(good(100, later)), polled), now_ms=later)
    assert (result.written, result.rejected) == (100, ())
    updated = labels_updated(store)
    assert {pod for pod, at in updated.items() if at == later} == {"web-3", "web-4"}
    assert all(at == T0 for pod, at in updated.items() if pod not in ("web-3", "web-4"))
    with store.engine.connect() as conn:
        text = conn.execute(
            select(schema.pod_labels.c.labels_json).where(schema.pod_labels.c.pod == "web-3")
        ).scalar_one()
    assert json.loads(text) == polled[("shop", "web-3")]
    held = writer._labels["default"]
    refs = {ref: ref for ref in polled}
    assert all(held[ref] is value for ref, value in polled.items())
    assert all(refs[ref] is ref for ref in held)


def test_a_restart_holds_one_string_per_name_and_no_parsed_labels(store: Store) -> None:
    # At 150,000 pods a restart's load held 240 MB (a string per field of every series row,
    # every pod's labels parsed); what it holds now is the keys over shared names, and a
    # digest per pod.
    pods = 2_000
    labels = {
        ("shop", f"web-{i:05}"): {f"label-{j}": f"value-{i}-{j}" for j in range(6)}
        for i in range(pods)
    }
    keys = [
        SeriesKey.for_container("shop", pod, container, cluster="prod-eu-1")
        for _ns, pod in labels
        for container in ("app", "sidecar")
    ]
    samples = tuple(Sample(key, T0, 15_000, 1, 1) for key in keys)
    store.write(Batch(Kind.CONTAINER, samples, labels, cluster="prod-eu-1"), now_ms=T0)
    writer = store._writer = SampleWriter(store.engine, store.head)
    gc.collect()
    tracemalloc.start()
    try:
        writer._meet({"prod-eu-1"})
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(writer._ids) == len(keys)
    names = {id(getattr(key, field)) for key in writer._ids for field in ("pod", "container")}
    assert len(names) == pods + 2
    assert held / len(keys) < 450, held / len(keys)


MINUTE = 60_000


def churning_poll(at: int, pods: range, labels: bool = True) -> Batch:
    """A poll at ``at`` of ``pods`` (two containers each, their labels)."""
    samples = tuple(
        Sample(SeriesKey.for_container("shop", f"web-{p}", c), at, 15_000, p, 1)
        for p in pods
        for c in ("app", "proxy")
    )
    polled = {("shop", f"web-{p}"): {"app": "web", "pod": str(p)} for p in pods} if labels else {}
    return Batch(Kind.CONTAINER, samples, polled)


def test_the_maps_hold_the_series_of_the_last_hour_not_every_pod_ever_run(store: Store) -> None:
    # Pods are replaced all the time (rollouts, churn): the writer's maps must not grow with
    # every pod a cluster ever ran. 100 pods, 10 replaced every 5 minutes, for 4 hours.
    writer = store._writer
    sizes = []
    for step in range(48):
        at = T0 + step * 5 * MINUTE
        alive = range(step * 10, step * 10 + 100)
        result = store.write(churning_poll(at, alive), now_ms=at)
        assert (result.written, result.rejected) == (200, ())
        sizes.append((len(writer._ids), len(writer._labels["default"])))
    # What an hour (and a sweep's 10 minutes) of churn leaves: 100 pods alive, 10 new every
    # 5 minutes; without forgetting, all 570 pods run (1,140 series) would be held.
    hour = FORGET_AFTER_MS // (5 * MINUTE)
    most_pods = 100 + 10 * (hour + 2 + 1)
    assert max(series for series, _ in sizes[-12:]) <= 2 * most_pods
    assert max(pods for _, pods in sizes[-12:]) <= most_pods
    assert most_pods < len(series_names(store)) // 2  # the bound means something
    # A forgotten series that comes back is found again: its id, no second series row.
    with store.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(schema.series)).scalar_one()
    back_at = T0 + 48 * 5 * MINUTE
    back = store.write(churning_poll(back_at, range(0, 5)), now_ms=back_at)
    assert (back.written, back.rejected) == (10, ())
    with store.engine.connect() as conn:
        after = conn.execute(select(func.count()).select_from(schema.series)).scalar_one()
        rows = conn.execute(
            select(func.count())
            .select_from(
                schema.samples_head.join(
                    schema.series, schema.series.c.id == schema.samples_head.c.series_id
                )
            )
            .where(schema.series.c.pod == "web-0")
        ).scalar_one()
    assert after == before
    assert rows == 2 + 2  # its two containers at the first poll (its only one), and now
    # And its labels are stored again (they were forgotten with it): the same ones.
    assert labels_updated(store)["web-0"] == back_at


def test_a_series_written_again_within_the_hour_stays_held(store: Store) -> None:
    # Pods missing from a few polls (a node's kubelet unreachable for minutes) are not gone.
    writer = store._writer
    store.write(churning_poll(T0, range(20)), now_ms=T0)
    held = {key: sid for key, sid in writer._ids.items()}
    for step in range(1, 13):  # an hour of polls without pods 10..19
        at = T0 + step * 5 * MINUTE
        store.write(churning_poll(at, range(10)), now_ms=at)
    at = T0 + 13 * 5 * MINUTE - MINUTE
    store.write(churning_poll(at, range(20)), now_ms=at)
    assert {key: writer._ids[key] for key in held} == held
    assert len(writer._labels["default"]) == 20


def test_a_restart_reads_back_only_the_series_seen_in_the_last_hours(store: Store) -> None:
    old = churning_poll(T0, range(0, 10))
    store.write(old, now_ms=T0)
    later = T0 + LOAD_HORIZON_MS + 10 * MINUTE
    store.write(churning_poll(later, range(10, 20)), now_ms=later)
    writer = store._writer = SampleWriter(store.engine, store.head)  # a restart
    writer._meet({"default"})
    assert {key.pod for key in writer._ids} == {f"web-{p}" for p in range(10, 20)}
    assert set(writer._labels["default"]) == {("shop", f"web-{p}") for p in range(10, 20)}
    # A pod of the old ones polled again: found, stored under its own series, labels kept.
    again = later + 15_000
    result = store.write(churning_poll(again, range(0, 20)), now_ms=again)
    assert (result.written, result.rejected) == (40, ())
    assert len(series_names(store)) == 20
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.series)).scalar_one() == 40


def test_after_a_restart_each_kind_adopts_its_own_batch_keys(store: Store) -> None:
    # A poll writes its node batch before its container batch: adopting the nodes' keys must
    # not leave the containers' keys read back (every later lookup would compare six fields).
    nodes = tuple(Sample(SeriesKey.for_node(f"n{i}"), T0, 15_000, 1, 1) for i in range(5))
    store.write(Batch(Kind.NODE, nodes), now_ms=T0)
    store.write(Batch(Kind.CONTAINER, tuple(good(20))), now_ms=T0)
    writer = store._writer = SampleWriter(store.engine, store.head)
    later_nodes = tuple(Sample(s.key, T0 + 15_000, 15_000, 2, 2) for s in nodes)
    later_containers = tuple(good(20, T0 + 15_000))
    store.write(Batch(Kind.NODE, later_nodes), now_ms=T0 + 15_000)
    store.write(Batch(Kind.CONTAINER, later_containers), now_ms=T0 + 15_000)
    held = {key: key for key in writer._ids}
    assert all(held[s.key] is s.key for s in later_nodes)
    assert all(held[s.key] is s.key for s in later_containers)
    assert head_count(store) == 50


def test_a_first_poll_of_many_series_creates_each_once_part_by_part(store: Store) -> None:
    # More new series than one insert takes at once (as at a large cluster's first poll).
    keys = [SeriesKey.for_container(f"ns-{i % 7}", f"pod-{i}", "app") for i in range(12_345)]
    samples = tuple(Sample(key, T0, 15_000, i, i) for i, key in enumerate(keys))
    assert store.write(Batch(Kind.CONTAINER, samples), now_ms=T0).written == 12_345
    with store.engine.connect() as conn:
        ids = conn.execute(select(schema.series.c.id)).scalars().all()
    assert len(ids) == len(set(ids)) == 12_345
    assert head_count(store) == 12_345
    again = tuple(Sample(key, T0 + 15_000, 15_000, i, i) for i, key in enumerate(keys))
    assert store.write(Batch(Kind.CONTAINER, again), now_ms=T0).written == 12_345
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.series)).scalar() == 12_345


def test_keys_read_back_from_the_buffer_are_never_the_ones_kept(store: Store) -> None:
    # After a restart with batches spooled, and after every reload of an outage, the first
    # batches written are read back from the buffer: a transient copy of the poller's keys.
    store.write(Batch(Kind.CONTAINER, tuple(good(100))), now_ms=T0)
    writer = store._writer = SampleWriter(store.engine, store.head)  # a restart
    restored = decode_batch(encode_batch(Batch(Kind.CONTAINER, tuple(good(100, T0 + 15_000)))))
    assert restored.samples.restored
    assert store.write(restored, now_ms=T0).written == 100
    held = {key: key for key in writer._ids}
    assert not any(held[key] is key for key in restored.samples.keys)
    live = Batch(Kind.CONTAINER, tuple(good(100, T0 + 30_000)))
    assert store.write(live, now_ms=T0).written == 100
    held = {key: key for key in writer._ids}
    assert all(held[key] is key for key in live.samples.keys)
    # An outage: the writer reloads its maps, keeping the poller's keys it holds, and the
    # batches read back meanwhile do not replace them.
    writer.invalidate()
    again = decode_batch(encode_batch(Batch(Kind.CONTAINER, tuple(good(100, T0 + 45_000)))))
    assert store.write(again, now_ms=T0).written == 100
    held = {key: key for key in writer._ids}
    assert all(held[key] is key for key in live.samples.keys)
    assert head_count(store) == 400


# --- the rule, read plainly, against the writer's fast and general paths ---------------------

Values = tuple[int, int, int]
"""(window_ms, cpu_nanocores, memory_bytes)"""
Row = tuple[str, int, int, int, int]
"""(container, ts_ms, window_ms, cpu_nanocores, memory_bytes)"""


@dataclass
class Reference:
    """The module docstring's rule written the plain way: a sample equal to its series' stored
    newest or to the last one written below it is skipped, as is an exact repeat within the
    batch; anything else is written. What a batch makes newest and below-newest counts only
    from the next batch on."""

    newest: dict[str, tuple[int, Values]] = field(default_factory=dict)
    below: dict[str, tuple[int, Values]] = field(default_factory=dict)

    def write(self, samples: list[tuple[str, int, Values]]) -> list[Row]:
        newest, below = dict(self.newest), dict(self.below)
        written: dict[str, set[tuple[int, Values]]] = {}
        rows: list[Row] = []
        for name, ts, values in samples:
            if (ts, values) in (self.newest.get(name), self.below.get(name)):
                continue
            if (ts, values) in written.setdefault(name, set()):
                continue
            written[name].add((ts, values))
            rows.append((name, ts, *values))
            current = newest.get(name)
            if current is None or ts > current[0]:
                newest[name] = (ts, values)
                below.pop(name, None)
            elif ts == current[0]:
                newest[name] = (ts, values)
            else:
                below[name] = (ts, values)
        self.newest, self.below = newest, below
        return rows


VALUES: list[Values] = [(15_000, 1_000, 2_000), (15_000, 1_001, 2_000), (10_000, 1_000, 2_000)]
CLUSTERS = itertools.count()

batches = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.integers(0, 4), st.integers(0, 4), st.sampled_from(VALUES)), max_size=14
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
)


def key(cluster: str, i: int) -> SeriesKey:
    return SeriesKey.for_container("shop", "web", f"s{i}", cluster)


def stored_rows(store: Store, cluster: str) -> Counter[Row]:
    h, s = schema.samples_head, schema.series
    with store.engine.connect() as conn:
        return Counter(
            tuple(row)  # type: ignore[misc]
            for row in conn.execute(
                select(s.c.container, h.c.ts_ms, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
                .join(s, s.c.id == h.c.series_id)
                .where(s.c.cluster == cluster)
            )
        )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=batches)
def test_written_rows_and_skips_follow_the_rule(
    store: Store, batches: list[tuple[list[tuple[int, int, Values]], bool]]
) -> None:
    # Each example its own cluster (new series); the writer's maps carry over between batches.
    cluster = f"c{next(CLUSTERS)}"
    held = {i: key(cluster, i) for i in range(5)}
    reference = Reference()
    expected: Counter[Row] = Counter()
    for step, (drawn, same_objects) in enumerate(batches):
        # Keys as the poller hands them (the same objects every poll) or equal new ones.
        keys = held if same_objects else {i: key(cluster, i) for i in range(5)}
        samples = [Sample(keys[i], T0 + 1_000 * dt, *values) for i, dt, values in drawn]
        result = store.write(Batch(Kind.CONTAINER, tuple(samples), cluster=cluster), now_ms=T0)
        rows = reference.write([(f"s{i}", T0 + 1_000 * dt, values) for i, dt, values in drawn])
        assert (result.written, result.skipped_duplicates, result.rejected) == (
            len(rows),
            len(samples) - len(rows),
            (),
        ), f"batch {step}"
        expected.update(rows)
        assert stored_rows(store, cluster) == expected, f"batch {step}"


def test_reloading_after_a_failure_keeps_the_keys_and_labels_already_held(store: Store) -> None:
    # Every retry during a database outage reloads the maps: equal keys and labels are kept as
    # the same objects, not copied (at 150,000 pods a copy is hundreds of MB).
    labels = {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(50)}
    batch = Batch(Kind.CONTAINER, tuple(good(100)), labels)
    store.write(batch, now_ms=T0)
    writer = store._writer
    keys_before = {sid: key for key, sid in writer._ids.items()}
    labels_before = dict(writer._labels["default"])
    writer.load()
    assert {sid: key for key, sid in writer._ids.items()} == keys_before
    assert all(keys_before[sid] is key for key, sid in writer._ids.items())
    assert all(writer._labels["default"][ref] is v for ref, v in labels_before.items())
    # ... and the (namespace, pod) keys of the labels too, not new ones from the rows.
    refs_before = {ref: ref for ref in labels_before}
    assert all(refs_before[ref] is ref for ref in writer._labels["default"])
    # What changed meanwhile in the database is read anew.
    with store.engine.begin() as conn:
        conn.execute(
            schema.pod_labels.update()
            .where(schema.pod_labels.c.pod == "web-0")
            .values(labels_json='{"app":"api"}')
        )
    writer.load()
    assert writer._labels["default"][("shop", "web-0")] == labels_digest({"app": "api"})
    assert writer._labels["default"][("shop", "web-1")] is labels_before[("shop", "web-1")]


def test_a_failed_reload_keeps_the_keys_and_labels_held_for_the_next_one(store: Store) -> None:
    # During an outage a reload can fail after it began (PostgreSQL: a table locked); the next
    # one, once the database answers, must still find the held objects, not read every key
    # and label set anew.
    labels = {("shop", f"web-{i}"): {"app": "web", "i": str(i)} for i in range(50)}
    store.write(Batch(Kind.CONTAINER, tuple(good(100)), labels), now_ms=T0)
    writer = store._writer
    keys_before = {sid: key for key, sid in writer._ids.items()}
    labels_before = dict(writer._labels["default"])
    with store.engine.begin() as conn:  # the labels' read fails, after the keys' succeeded
        conn.exec_driver_sql("ALTER TABLE pod_labels RENAME TO pod_labels_away")
    try:
        for _attempt in range(2):
            with pytest.raises(Exception, match="pod_labels"):
                writer.load()
            assert not writer._ids
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE pod_labels_away RENAME TO pod_labels")
    writer.load()
    assert {sid: key for key, sid in writer._ids.items()} == keys_before
    assert all(keys_before[sid] is key for key, sid in writer._ids.items())
    assert all(writer._labels["default"][ref] is v for ref, v in labels_before.items())
    again = store.write(Batch(Kind.CONTAINER, tuple(good(100)), labels), now_ms=T0)
    assert (again.written, again.skipped_duplicates) == (0, 100)


def _maps(newest: Any) -> tuple[dict[int, int], dict[int, int]]:
    """A write's newest (``writer._Newest``: maps, and columns for other series) as two maps
    by series id: timestamps, digests."""
    timestamps, digests = dict(newest.timestamps), dict(newest.digests)
    for sids, stamps, marks in newest.columns:
        timestamps.update(zip(sids.tolist(), stamps.tolist(), strict=True))
        digests.update(zip(sids.tolist(), marks.tolist(), strict=True))
    return timestamps, digests


@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(
        st.tuples(st.integers(0, 7), st.integers(-2, 3), st.sampled_from(VALUES)), max_size=12
    ),
    newest=st.dictionaries(st.integers(1, 6), st.integers(-1, 2), max_size=6),
    below=st.dictionaries(st.integers(1, 6), st.integers(-3, -2), max_size=2),
    huge=st.booleans(),
)
def test_the_column_wide_pass_answers_as_the_one_by_one_pass(
    drawn: list[tuple[int, int, Values]],
    newest: dict[int, int],
    below: dict[int, int],
    huge: bool,
) -> None:
    # Keys 0..5 are stored series (ids 1..6), 6 and 7 are not stored yet.
    keys = [SeriesKey.for_container("shop", f"p{i}", "c") for i in range(8)]
    writer = SampleWriter(None, None)  # type: ignore[arg-type]  # no database: a pure pass
    writer._ids = {keys[i]: i + 1 for i in range(6)}
    writer._newest = NewestTable.of(
        {sid: T0 + 1_000 * dt for sid, dt in newest.items()},
        {sid: digest(*VALUES[0]) for sid in newest},
    )
    writer._below = {sid: (T0 + 1_000 * dt, digest(*VALUES[0])) for sid, dt in below.items()}
    samples = Samples()
    for i, dt, (window, cpu, memory) in drawn:
        samples.keys.append(keys[i])
        samples.timestamps_ms.append(T0 + 1_000 * dt)
        samples.windows_ms.append(window)
        samples.cpu_nanocores.append(2**70 if huge and i == 0 else cpu)
        samples.memory_bytes.append(memory)
    fast = writer._fresh_rows(samples, writer._ids)
    slow = writer._fresh_rows_one_by_one(samples, writer._ids)
    assert sorted(fast.rows) == sorted(slow.rows)
    assert _maps(fast.newest) == _maps(slow.newest)
    assert (fast.below, fast.unknown, fast.missing) == (slow.below, slow.unknown, slow.missing)
    assert list(fast.pending) == list(slow.pending)
    assert fast.fits == slow.fits


_INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.tuples(_INT64, _INT64, _INT64), min_size=1, max_size=50))
def test_the_digest_of_a_column_is_each_value_s_digest(
    values: list[tuple[int, int, int]],
) -> None:
    windows, cpus, memories = (np.array(column, np.int64) for column in zip(*values, strict=True))
    assert digests(windows, cpus, memories).tolist() == [digest(*v) for v in values]


def test_digests_tell_apart_values_a_unit_apart() -> None:
    """Samples of one series at one timestamp differ by little (a retried scrape): every value
    one unit away from another, over a grid of realistic values, has its own digest."""
    seen: dict[int, tuple[int, int, int]] = {}
    for window in (0, 1, 15_000, 15_001, 2**31 - 1):
        for cpu in range(10_000_000, 10_000_000 + 60):
            for memory in range(2**30 - 30, 2**30 + 30):
                mark = digest(window, cpu, memory)
                assert seen.setdefault(mark, (window, cpu, memory)) == (window, cpu, memory)
    assert len(seen) == 5 * 60 * 60


def test_a_steady_poll_goes_column_wide_but_for_its_repeated_timestamps() -> None:
    keys = [SeriesKey.for_container("shop", f"p{i}", "c") for i in range(100)]
    ids = {key: sid for sid, key in enumerate(keys[:90], 1)}
    samples = Samples()
    for i, key in enumerate(keys):
        samples.keys.append(key)
        samples.timestamps_ms.append(T0 + i)
        samples.windows_ms.append(15_000)
        samples.cpu_nanocores.append(i)
        samples.memory_bytes.append(i)
    newest = {sid: T0 - 15_000 for sid in ids.values()}
    newest[5] = T0 + 4  # the series of sample 4 was polled at this timestamp already
    split = _fresh_split(samples, ids, NewestTable.of(newest), {})
    assert split is not None
    found, rest = split
    assert len(found.rows) == 89 and len(found.pending) == 10 and len(found.missing) == 10
    assert list(rest.keys) == [keys[4]]
    assert _maps(found.newest)[0] == {sid: T0 + sid - 1 for sid in ids.values() if sid != 5}
    # A stored series twice in one batch: the whole batch goes one by one.
    samples.keys[0] = keys[1]
    assert _fresh_split(samples, ids, NewestTable.of(newest), {}) is None


def _fleet_batch(cluster: str, count: int, ts: int) -> Batch:
    samples = tuple(
        Sample(SeriesKey.for_node(f"n{i}", cluster), ts, 15_000, 10 + i, 20 + i)
        for i in range(count)
    )
    return Batch(Kind.NODE, samples, cluster=cluster)


def test_a_writer_holds_only_the_clusters_it_writes_and_still_skips_their_duplicates(
    store: Store,
) -> None:
    # A fleet database: another recorder's cluster ("far") must cost this writer nothing, yet
    # a cluster met later (even only through its samples' keys) is read before it is written,
    # so its stored samples sent again are skipped, not written twice.
    store.write(_fleet_batch("far", 300, T0), now_ms=T0)
    store.write(_fleet_batch("near", 20, T0), now_ms=T0)
    writer = store._writer = SampleWriter(store.engine, store.head)  # as after a restart
    again = store.write(_fleet_batch("near", 20, T0), now_ms=T0)
    assert (again.written, again.skipped_duplicates) == (0, 20)
    assert {key.cluster for key in writer._ids} == {"near"}
    assert len(writer._ids) == 20
    # Samples of "far" in a batch labelled with another cluster: "far" is read first.
    stray = _fleet_batch("far", 300, T0)
    result = store.write(Batch(Kind.NODE, stray.samples, cluster="near"), now_ms=T0)
    assert (result.written, result.skipped_duplicates) == (0, 300)
    assert {key.cluster for key in writer._ids} == {"near", "far"}
    # New series of "far" are found after insertion without reading any other cluster's.
    store.write(_fleet_batch("other", 5, T0), now_ms=T0)
    fresh = store.write(_fleet_batch("far", 301, T0 + 15_000), now_ms=T0 + 15_000)
    assert (fresh.written, fresh.skipped_duplicates) == (301, 0)
    assert head_count(store) == 20 + 300 + 5 + 301

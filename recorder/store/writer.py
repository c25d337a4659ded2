"""Appends samples to the head, idempotently.

The writer keeps two maps in memory, rebuilt from the database when it starts: series identity
to id, and each series' newest stored timestamp. A sample not newer than its series' newest one
is skipped, so polling faster than metrics-server's resolution, restarts and a second writer
never store a sample twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, Engine, func, select, tuple_

from recorder.domain import Batch, Kind, PodRef, Sample, SeriesKey, WriteResult
from recorder.store import schema
from recorder.store.engine import dialect_insert
from recorder.store.head import Head, HeadRow

_LOOKUP_CHUNK = 500


class SampleWriter:
    def __init__(self, engine: Engine, head: Head):
        self._engine = engine
        self._head = head
        self._ids: dict[SeriesKey, int] = {}
        self._last_ts: dict[int, int] = {}
        self._labels: dict[PodRef, Mapping[str, str]] = {}
        self._loaded = False

    def load(self) -> None:
        """Rebuild the in-memory maps from the database (at start, and after a failure)."""
        s, h, pl = schema.series, schema.samples_head, schema.pod_labels
        with self._engine.connect() as conn:
            ids = {
                SeriesKey(Kind(kind), node, namespace, pod, container): sid
                for sid, kind, node, namespace, pod, container in conn.execute(
                    select(s.c.id, s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container)
                )
            }
            last: dict[int, int] = {
                sid: ts for sid, ts in conn.execute(select(s.c.id, s.c.last_seen_ms))
            }
            for sid, ts in conn.execute(
                select(h.c.series_id, func.max(h.c.ts_ms)).group_by(h.c.series_id)
            ):
                if ts > last.get(sid, -1):
                    last[sid] = ts
            labels: dict[PodRef, Mapping[str, str]] = {
                (ns, pod): json.loads(text)
                for ns, pod, text in conn.execute(
                    select(pl.c.namespace, pl.c.pod, pl.c.labels_json)
                )
            }
        self._ids = ids
        self._last_ts = last
        self._labels = labels
        self._loaded = True

    def newest_timestamps(self) -> dict[int, int]:
        """Newest stored timestamp of each series this writer knows (a copy)."""
        return dict(self._last_ts)

    def invalidate(self) -> None:
        """Forget the in-memory maps; the next write reloads them from the database."""
        self._loaded = False

    def write(self, batch: Batch, now_ms: int) -> WriteResult:
        if not self._loaded:
            self.load()
        try:
            return self._write(batch, now_ms)
        except BaseException:
            # The transaction rolled back; our maps may hold ids that were never committed.
            self.invalidate()
            raise

    def _write(self, batch: Batch, now_ms: int) -> WriteResult:
        with self._engine.begin() as conn:
            ids = self._resolve_ids(conn, batch.samples)
            rows, last_ts = self._fresh_rows(batch.samples, ids)
            if rows:
                self._head.append(conn, rows)
            changed_labels = self._changed_labels(batch.pod_labels)
            if changed_labels:
                self._upsert_labels(conn, changed_labels, now_ms)
        self._last_ts.update(last_ts)
        self._labels.update(changed_labels)
        return WriteResult(written=len(rows), skipped_duplicates=len(batch.samples) - len(rows))

    def _fresh_rows(
        self, samples: Sequence[Sample], ids: Mapping[SeriesKey, int]
    ) -> tuple[list[HeadRow], dict[int, int]]:
        known = self._last_ts
        newest: dict[int, int] = {}
        rows = []
        for sample in samples:
            sid = ids[sample.key]
            ts = sample.timestamp_ms
            previous = newest.get(sid)
            if previous is None:
                previous = known.get(sid, -1)
            if ts <= previous:
                continue
            newest[sid] = ts
            rows.append((ts, sid, sample.window_ms, sample.cpu_nanocores, sample.memory_bytes))
        return rows, newest

    def _resolve_ids(self, conn: Connection, samples: Sequence[Sample]) -> dict[SeriesKey, int]:
        missing: dict[SeriesKey, int] = {}
        for sample in samples:
            if sample.key not in self._ids and sample.key not in missing:
                missing[sample.key] = sample.timestamp_ms
        if not missing:
            return self._ids
        s = schema.series
        values = [
            {
                "kind": key.kind.value,
                "node": key.node,
                "namespace": key.namespace,
                "pod": key.pod,
                "container": key.container,
                "first_seen_ms": first_ms,
                "last_seen_ms": first_ms,
            }
            for key, first_ms in missing.items()
        ]
        conn.execute(dialect_insert(conn, s).on_conflict_do_nothing(), values)
        found = dict(self._ids)
        # New rows (ours, and any another writer added since we loaded) have larger ids than
        # any we know: one range scan finds them. Identities still missing after it (another
        # writer's rows committed out of id order) are looked up by value.
        newest_known = max(self._ids.values(), default=0)
        columns = (s.c.id, s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container)
        for sid, kind, node, namespace, pod, container in conn.execute(
            select(*columns).where(s.c.id > newest_known)
        ):
            found[SeriesKey(Kind(kind), node, namespace, pod, container)] = sid
        keys = [key for key in missing if key not in found]
        identity = tuple_(s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container)
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            wanted = [(k.kind.value, k.node, k.namespace, k.pod, k.container) for k in chunk]
            for sid, kind, node, namespace, pod, container in conn.execute(
                select(*columns).where(identity.in_(wanted))
            ):
                found[SeriesKey(Kind(kind), node, namespace, pod, container)] = sid
        self._ids = found
        return found

    def _changed_labels(
        self, labels: Mapping[PodRef, Mapping[str, str]]
    ) -> dict[PodRef, Mapping[str, str]]:
        known = self._labels
        return {
            ref: pod_labels for ref, pod_labels in labels.items() if known.get(ref) != pod_labels
        }

    def _upsert_labels(
        self, conn: Connection, labels: Mapping[PodRef, Mapping[str, str]], now_ms: int
    ) -> None:
        pl = schema.pod_labels
        statement = dialect_insert(conn, pl)
        statement = statement.on_conflict_do_update(
            index_elements=[pl.c.namespace, pl.c.pod],
            set_={"labels_json": statement.excluded.labels_json, "updated_ms": now_ms},
        )
        conn.execute(
            statement,
            [
                {
                    "namespace": ns,
                    "pod": pod,
                    "labels_json": json.dumps(
                        dict(pod_labels), sort_keys=True, separators=(",", ":")
                    ),
                    "updated_ms": now_ms,
                }
                for (ns, pod), pod_labels in labels.items()
            ],
        )

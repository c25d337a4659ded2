"""Handing over: what a deposed leader fetched and could not store goes to the new leader.

A leader partitioned from the database polls on into its write queue (it cannot tell an
outage from a partition of its own). When the database answers again and another replica
leads, the samples it fetched since its last stored write cover time the new leader's polls do
not (the partition began before the takeover). So instead of dropping them:

- the **deposed replica** inserts each queued batch, as the write queue encodes it, into the
  ``handover`` table (``Outbox``): not a write of history, so the fence does not apply, and it
  uses an engine of its own (the store's engine is fenced); the caller bounds the whole
  handover with a deadline and drops (counted) what it could not hand over in time;
- the **leader** takes its cluster's oldest handed-over batch at each write round
  (``oldest``: one indexed query, ``FOR UPDATE SKIP LOCKED``), writes it through the writer
  inside that transaction, skipping the samples the head already holds, and deletes the row in
  the same transaction (``Store.take_handed_over``): a crash in between writes nothing and
  keeps the row, so each batch is stored exactly once. A row that cannot be decoded is
  deleted, logged and counted as dropped: it never blocks the rows behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select

from recorder.domain import WriteResult
from recorder.store import engine as engines
from recorder.store import schema

MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
"""A batch larger than this is not handed over (dropped, counted): an encoded poll of
metrics-server's documented maximum (150,000 pods) is a few MB, the spool's whole default
budget 1 GiB, and PostgreSQL takes at most 1 GB in one ``bytea``."""


@dataclass(frozen=True, slots=True)
class HandedOver:
    """One row of the ``handover`` table."""

    id: int
    cluster: str
    kind: str
    created_ms: int
    samples: int
    replica: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Taken:
    """What the leader did with one handed-over batch: wrote it (``result``), or deleted it
    unread (``error``: why it could not be decoded)."""

    id: int
    kind: str
    samples: int
    replica: str
    created_ms: int
    result: WriteResult | None = None
    error: str | None = None


def oldest(conn: Connection, cluster: str) -> HandedOver | None:
    """The oldest handed-over batch of ``cluster``, locked for this transaction on PostgreSQL
    (``FOR UPDATE SKIP LOCKED``: a row another transaction is taking is passed over); None
    when there is none. One query through the ``(cluster, id)`` index."""
    h = schema.handover
    query = select(
        h.c.id, h.c.cluster, h.c.kind, h.c.created_ms, h.c.samples, h.c.replica, h.c.payload
    )
    query = query.where(h.c.cluster == cluster).order_by(h.c.id).limit(1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).first()
    if row is None:
        return None
    return HandedOver(
        int(row.id),
        row.cluster,
        row.kind,
        int(row.created_ms),
        int(row.samples),
        row.replica,
        bytes(row.payload),
    )


def remove(conn: Connection, handover_id: int) -> None:
    h = schema.handover
    conn.execute(delete(h).where(h.c.id == handover_id))


def waiting(conn: Connection, cluster: str | None = None) -> int:
    """Handed-over batches waiting (of ``cluster``, or of every cluster)."""
    h = schema.handover
    query = select(func.count()).select_from(h)
    if cluster is not None:
        query = query.where(h.c.cluster == cluster)
    return int(conn.execute(query).scalar_one())


class Outbox:
    """The deposed replica's side: inserts batches into the ``handover`` table over an engine
    of its own (not fenced), with the store's timeouts. Each ``put`` is one transaction."""

    def __init__(
        self, url: str, *, cluster: str, replica: str, timeouts: engines.Timeouts | None = None
    ) -> None:
        self.cluster = cluster
        self.replica = replica
        self._timeouts = timeouts or engines.Timeouts()
        # Unpooled: a put that a handover's deadline gave up on (a frozen database) returns
        # its connection after ``close``; a pool would keep it open until garbage-collected.
        self._engine: Engine = engines.create(url, timeouts=self._timeouts, pooled=False)

    def put(self, kind: str, samples: int, payload: bytes, *, created_ms: int) -> None:
        """Hand one encoded batch over; raises ``StoreError`` when the database does not take
        it (``ValueError`` when it is larger than ``MAX_PAYLOAD_BYTES``)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"a batch of {len(payload)} bytes is larger than a handover takes "
                f"({MAX_PAYLOAD_BYTES} bytes)"
            )
        statement = insert(schema.handover).values(
            cluster=self.cluster,
            kind=kind,
            created_ms=created_ms,
            samples=samples,
            replica=self.replica,
            payload=payload,
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(statement)
        except engines.DATABASE_ERRORS as exc:
            raise engines.failure(
                exc, f"handing over {samples} samples to the new leader", self._timeouts
            ) from exc

    def close(self) -> None:
        self._engine.dispose()

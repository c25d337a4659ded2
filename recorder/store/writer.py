"""Appends samples to the head, idempotently, and isolates what the database refuses.

Duplicates (design §5): only an exact (series, timestamp) duplicate collapses, by the one rule
of ``recorder.stats.dedup`` (its winner does not depend on arrival order). The writer keeps in
memory, rebuilt from the database when it starts (only for the clusters it writes, each read
when first met: a fleet database holds other recorders' clusters): series identity to id, each
series' newest stored timestamp with a digest of that sample's values, and the last timestamp
(and digest) it wrote below that newest one (after a clock stepped back). A sample equal to
either of them is skipped, so polling faster than metrics-server's resolution and restarts write
nothing twice, at the cost of a few dictionary lookups. Anything else is written: an older
sample (a late one, a clock stepped back, a series whose newest row is stamped in the future),
and a sample at a stored timestamp with other values (which may be the rule's winner). Reads and
compaction collapse whatever exact duplicates get in.

Faults stay where they start:

- every value is checked against its column before anything is sent (integer ranges of the
  column types, string lengths, no NUL or lone surrogate in text): an unstorable sample or pod's
  labels is rejected alone (``out_of_range``, ``invalid_text``);
- when the database still refuses the batch for its content (``engine.is_content_error``), it
  is split in halves, each written in its own transaction, until the refused samples and pods'
  labels are found (``database_rejected``); everything else is written;
- any other failure is raised (``engine.failure`` tells transient from not), and the caller
  retries the batch.

A batch handed over by a deposed leader (``recorder.store.handover``) is written inside the
caller's transaction (each attempt a savepoint of it) and first checked against the head: its
samples may be older than their series' newest, where the in-memory maps see nothing, and the
new leader may have stored the same ones from its own polls. A sample whose series already
holds a head row at its timestamp with its values is skipped, and so are the labels of pods
whose labels are stored already (``against_head``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import compress, islice
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import BigInteger, Column, Connection, Engine, func, select, tuple_
from sqlalchemy.dialects import postgresql

from recorder.domain import Batch, Kind, PodRef, Rejection, Sample, Samples, SeriesKey, WriteResult
from recorder.stats.codec import decode_samples
from recorder.store import bulk, schema
from recorder.store import head as heads
from recorder.store.engine import dialect_insert, first_line, is_content_error
from recorder.store.head import Head, HeadRow
from recorder.store.newest import NewestTable

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]

FORGET_AFTER_MS = 3_600_000
"""A series not written for this long leaves the writer's maps (and its pod's labels with it):
they would otherwise grow with every pod a cluster ever ran (the simulator's churn at 150,000
pods makes about 10,000 series an hour). One that comes back is found again in the database."""
_SWEEP_EVERY_MS = 600_000
"""How often (in sample time) a kind's written series are checked for ``FORGET_AFTER_MS``."""
LOAD_HORIZON_MS = FORGET_AFTER_MS + 2 * 3_600_000
"""What a load reads back: series whose ``last_seen_ms`` (advanced by compaction, one block of
an hour behind at most, plus its lag) is within this of the newest one's, with their pods'
labels."""
_LOOKUP_CHUNK = 500
_LOAD_PART = 10_000
_INSERT_CHUNK = 5_000
LOAD_STATEMENT_TIMEOUT_MS = 600_000
"""Rebuilding the maps scans the whole head once (seconds at the largest clusters): it gets
more than a write's statement timeout, or a large head would fail every write after a restart."""
MAX_ISOLATED = 64
"""Refused items a batch's isolation finds one by one; past that, each group the database
still refuses is rejected whole, so a database that refuses everything costs a bounded number
of attempts (about ``2 * MAX_ISOLATED * log2(batch size)``)."""

OUT_OF_RANGE = "out_of_range"
INVALID_TEXT = "invalid_text"
DATABASE_REJECTED = "database_rejected"


def _int_range(column: Column[Any]) -> tuple[int, int]:
    bits = 64 if isinstance(column.type, BigInteger) else 32
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


_h, _s, _pl = schema.samples_head, schema.series, schema.pod_labels
_TS_MIN, _TS_MAX = _int_range(_h.c.ts_ms)
_WINDOW_MIN, _WINDOW_MAX = _int_range(_h.c.window_ms)
_CPU_MIN, _CPU_MAX = _int_range(_h.c.cpu_nanocores)
_MEMORY_MIN, _MEMORY_MAX = _int_range(_h.c.memory_bytes)
_KEY_LENGTHS = tuple(
    (name, int(_s.c[name].type.length))  # type: ignore[attr-defined]
    for name in ("cluster", "node", "namespace", "pod", "container")
)
_CLUSTER_LENGTH = int(_pl.c.cluster.type.length)  # type: ignore[attr-defined]
_NAMESPACE_LENGTH = int(_pl.c.namespace.type.length)  # type: ignore[attr-defined]
_POD_LENGTH = int(_pl.c.pod.type.length)  # type: ignore[attr-defined]
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL refuses it in text, and in JSON once labels become jsonb) and lone
surrogates (no encoding can store them)."""

T = TypeVar("T")

LabelRef = tuple[str, PodRef]
"""(cluster, (namespace, pod)): the batch's own (namespace, pod), which the labels map keeps
(a tuple of its own per pod was about 10 MB at 150,000 pods)."""


StoredLabels = Mapping[str, str] | bytes
"""A pod's stored labels as the writer holds them: the batch's own object once a write met
them, or, as ``load`` read them, the digest of their canonical JSON (``labels_digest``)."""


def labels_text(labels: Mapping[str, str]) -> str:
    """A pod's labels as the ``labels_json`` column stores them (sorted keys, no spaces)."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def labels_digest(labels: Mapping[str, str]) -> bytes:
    """128 bits of BLAKE2b over ``labels_text``: what ``load`` keeps of a pod's stored labels
    to tell whether the next poll's are the same (the parsed labels of 150,000 pods held
    about 110 MB after a restart; their digests hold 7 MB)."""
    return hashlib.blake2b(labels_text(labels).encode(), digest_size=16).digest()


_MASK64 = (1 << 64) - 1
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x94D049BB133111EB)
"""Odd 64-bit constants (the golden ratio's and two of splitmix64's): each multiplication is a
bijection of 64-bit words."""
_MIX_U64 = tuple(np.uint64(k) for k in _MIX)


def digest(window_ms: int, cpu_nanocores: int, memory_bytes: int) -> int:
    """What tells two samples at one timestamp apart (equal values, equal digests): a signed
    64-bit mix of the three values' 64-bit words, the same as ``digests`` computes a column at
    a time (held only in memory, never stored)."""
    k_window, k_cpu, k_memory = _MIX
    mixed = ((window_ms * k_window) ^ (cpu_nanocores * k_cpu) ^ (memory_bytes * k_memory)) & _MASK64
    mixed ^= mixed >> 31
    mixed = (mixed * k_cpu) & _MASK64
    mixed ^= mixed >> 29
    return mixed - (1 << 64) if mixed >> 63 else mixed


def digests(
    windows: npt.NDArray[np.int64], cpus: npt.NDArray[np.int64], memories: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """``digest`` of each position of three int64 columns, in a few passes that run in C."""
    k_window, k_cpu, k_memory = _MIX_U64
    with np.errstate(over="ignore"):  # the multiplications wrap around 2**64, as meant
        mixed = windows.view(np.uint64) * k_window
        mixed ^= cpus.view(np.uint64) * k_cpu
        mixed ^= memories.view(np.uint64) * k_memory
        mixed ^= mixed >> np.uint64(31)
        mixed *= k_cpu
        mixed ^= mixed >> np.uint64(29)
    return mixed.view(np.int64)


_IDENTITY = (_s.c.id, _s.c.kind, _s.c.node, _s.c.namespace, _s.c.pod, _s.c.container, _s.c.cluster)


def _newest_in_head(conn: Connection, clusters: Collection[str]) -> Any:
    """Each series' newest head row of ``clusters`` (of duplicates at that timestamp, the
    rule's winner on PostgreSQL, any one on SQLite: the digest only spares rewriting it)."""
    h = _h
    of_clusters = h.c.series_id.in_(select(_s.c.id).where(_s.c.cluster.in_(sorted(clusters))))
    if conn.dialect.name == "postgresql":
        return (
            select(h.c.series_id, h.c.ts_ms, h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes)
            .where(of_clusters)
            .ext(postgresql.distinct_on(h.c.series_id))
            .order_by(
                h.c.series_id,
                h.c.ts_ms.desc(),
                h.c.cpu_nanocores.desc(),
                h.c.memory_bytes.desc(),
                h.c.window_ms.desc(),
            )
        )
    # SQLite fills the bare columns of a max() aggregate from the row holding the maximum.
    return (
        select(
            h.c.series_id, func.max(h.c.ts_ms), h.c.window_ms, h.c.cpu_nanocores, h.c.memory_bytes
        )
        .where(of_clusters)
        .group_by(h.c.series_id)
    )


@dataclass(frozen=True, slots=True)
class _Newest:
    """What a write makes newest: per series, the timestamp and the digest of that sample;
    ``columns``: more of them as (series ids, timestamps, digests) arrays, for series the maps
    do not hold (a steady poll's, found column by column: 200,000 series' in two maps held
    28 MB while written)."""

    timestamps: dict[int, int]
    digests: dict[int, int]
    columns: list[tuple[IntArray, IntArray, IntArray]] = field(default_factory=list)


_Source = tuple[
    tuple[Sequence[int], Sequence[int | None], Sequence[int], Sequence[int], Sequence[int]],
    npt.NDArray[np.intp] | None,
]
"""Rows' Python lists (timestamps; series ids, which may hold ``None`` where no row is taken;
windows, cpu, memory) and the positions taken from them (``None``: all)."""


class HeadRows:
    """Head rows to write: tuples appended one by one, and parts kept as columns, zipped into
    rows only as the database reads them (a steady poll's 200,000 rows as tuples held 18 MB
    while written). Iterated in no particular order between parts."""

    __slots__ = ("_columns", "_count", "_rows", "_sources")

    def __init__(self) -> None:
        self._rows: list[HeadRow] = []
        self._columns: list[tuple[IntArray, IntArray, IntArray, IntArray, IntArray]] = []
        self._sources: list[_Source] = []
        """Per part of ``_columns``, the Python lists it was taken from."""
        self._count = 0

    def append(self, row: HeadRow) -> None:
        self._rows.append(row)

    def add_columns(
        self,
        timestamps: IntArray,
        sids: IntArray,
        windows: IntArray,
        cpus: IntArray,
        memories: IntArray,
        source: _Source,
    ) -> None:
        """A part given as columns; ``source``: the same rows as Python integers, the lists
        they are in and the positions taken from them (``None``: all), which SQLite's insert
        reads instead of making Python integers of the columns again."""
        self._columns.append((timestamps, sids, windows, cpus, memories))
        self._sources.append(source)
        self._count += len(timestamps)

    def __iadd__(self, other: HeadRows) -> HeadRows:
        self._rows += other._rows
        self._columns += other._columns
        self._sources += other._sources
        self._count += other._count
        return self

    def __len__(self) -> int:
        return len(self._rows) + self._count

    def __iter__(self) -> Iterator[HeadRow]:
        yield from self._rows
        for lists, taken in self._sources:  # the Python integers the columns were made from
            if taken is None:
                yield from zip(*lists, strict=True)
            else:
                wanted = np.zeros(len(lists[0]), np.bool_)
                wanted[taken] = True
                kept = wanted.tolist()
                yield from zip(*(compress(column, kept) for column in lists), strict=True)

    def column_parts(self) -> Iterator[heads.Columns]:
        """The rows as parts of columns: those appended one by one, then each part added."""
        if self._rows:
            ts, sids, windows, cpus, memories = zip(*self._rows, strict=True)
            yield ts, sids, windows, cpus, memories
        yield from self._columns


@dataclass(slots=True)
class _Rows:
    """What one pass of ``SampleWriter._fresh_rows`` over a batch finds."""

    rows: HeadRows = field(default_factory=HeadRows)
    newest: _Newest = field(default_factory=lambda: _Newest({}, {}))
    below: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    """Per series, the below-newest (timestamp, digest) the rows leave (``None``: forget it)."""
    unknown: dict[int, int] = field(default_factory=dict)
    """Series whose stored newest sample is polled again while its digest is not known, to
    that timestamp."""
    missing: dict[SeriesKey, int] = field(default_factory=dict)
    """Series without an id yet, to their first timestamp in the batch."""
    pending: Samples = field(default_factory=Samples)
    """The samples of ``missing``: no row yet (``add`` the pass over them once they have ids)."""
    fits: bool = True
    """Every sample's values fit their columns."""

    def add(self, other: _Rows) -> None:
        """Take in a pass over other series (``pending``, once they have ids)."""
        self.rows += other.rows
        self.newest.timestamps.update(other.newest.timestamps)
        self.newest.digests.update(other.newest.digests)
        self.newest.columns.extend(other.newest.columns)
        self.below.update(other.below)
        self.unknown.update(other.unknown)
        self.pending = other.pending


@dataclass
class _Isolation:
    """Counts of one batch's isolation."""

    written: int = 0
    skipped: int = 0
    attempts: int = 0
    found: int = 0


class SampleWriter:
    def __init__(self, engine: Engine, head: Head):
        self._engine = engine
        self._head = head
        self._ids: dict[SeriesKey, int] = {}
        self._newest = NewestTable()
        self._below: dict[int, tuple[int, int]] = {}
        """Per series, the last timestamp (and digest) written below its newest one, if any."""
        self._labels: dict[str, dict[PodRef, StoredLabels]] = {}
        """Each cluster's pods' stored labels (the batch's own keys look them up as they are)."""
        self._loaded = False
        self._held: tuple[dict[SeriesKey, int], dict[str, dict[PodRef, StoredLabels]]] = (
            {},
            {},
        )
        """The maps a load began from, until one succeeds (a failed load keeps them)."""
        self._clusters: set[str] = set()
        """The clusters whose series, newest samples and labels the maps hold: those written
        through this writer, each read when first met (in a fleet database the others belong
        to other recorders, and reading all of them would cost memory for nothing)."""
        self._swept: dict[Kind, int] = {}
        """Per kind, when (``now_ms`` of a write) its series were last checked for being gone."""
        self._adopt_kinds: set[Kind] = set()
        """The kinds whose keys in the series map were read from the database: the next written
        batch of each kind has its key objects replace them (the poller hands the same objects
        every poll, so lookups then stop at identity instead of comparing six fields). A batch
        read back from the buffer does not: its keys are a transient copy, and adopting them
        would keep two."""

    def load(self) -> None:
        """Rebuild the in-memory maps from the database (at start, and after a failure).

        Keys and labels equal to ones already held are kept as they are: after a failed write
        (every retry of a database outage reloads) the maps are rebuilt without a second copy
        of 200,000 keys and 150,000 pods' labels at metrics-server's maximum. A load that fails
        keeps what was held for the next one: while PostgreSQL refused the reads (a table
        locked), the first failed load lost them, and the load after the outage read every key
        and label set anew (about 135 MB more at 150,000 pods, kept after the outage)."""
        s, pl = schema.series, schema.pod_labels
        if self._ids or self._labels:
            self._held = (self._ids, self._labels)
        held_ids, held_labels = self._held
        held_keys = {sid: key for key, sid in held_ids.items()}
        # The old maps go before the new ones are read (not two of each at once).
        self._loaded = False
        self._ids, self._newest, self._below, self._labels = {}, NewestTable(), {}, {}
        clusters = sorted(self._clusters)
        with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {LOAD_STATEMENT_TIMEOUT_MS}")
            # Pods' series are made by compaction; other clusters' belong to other recorders;
            # series gone for hours before the newest one seen (pods replaced long ago) are
            # found again if they come back. Sample time, not this machine's clock.
            written = (s.c.kind != Kind.POD.value) & s.c.cluster.in_(clusters)
            newest_seen = conn.execute(select(func.max(s.c.last_seen_ms)).where(written)).scalar()
            if newest_seen is not None:
                written &= s.c.last_seen_ms >= int(newest_seen) - LOAD_HORIZON_MS
            ids: dict[SeriesKey, int] = {}
            read_anew: set[Kind] = set()
            # One object per distinct name, not one per row and field: a pod's containers
            # share its name, and a few namespaces, nodes and container names are repeated
            # across every series (1.3 million strings, 77 MB, at 150,000 pods after a
            # restart; the pods' labels below share the pod names too).
            names: dict[str, str] = {}
            name = names.setdefault
            for sid, *row in conn.execute(_streamed(select(*_IDENTITY).where(written))):
                key = held_keys.get(sid)
                if key is None or _identity(key) != (row[5], *row[:5]):
                    kind, node, namespace, pod, container, cluster = row
                    key = SeriesKey(
                        Kind(kind),
                        name(node, node),
                        name(namespace, namespace),
                        name(pod, pod),
                        name(container, container),
                        name(cluster, cluster),
                    )
                    read_anew.add(key.kind)
                ids[key] = sid
            del held_keys
            newest = NewestTable()
            for part in conn.execute(
                _streamed(select(s.c.id, s.c.last_seen_ms).where(written))
            ).partitions(_LOAD_PART):
                newest.set_from([r[0] for r in part], [r[1] for r in part], None)
            # Each series' newest head row, with its digest unless the series table knows
            # a newer timestamp (its newest sample was compacted).
            for in_head in conn.execute(_streamed(_newest_in_head(conn, clusters))).partitions(
                _LOAD_PART
            ):
                seen = newest.timestamps([row[0] for row in in_head])
                kept = [
                    row
                    for row, top in zip(in_head, seen, strict=True)
                    if top is None or row[1] >= top
                ]
                if not kept:
                    continue
                sids, stamps, windows, cpus, memories = (
                    np.array(column, np.int64) for column in zip(*kept, strict=True)
                )
                newest.set_from(sids, stamps, digests(windows, cpus, memories))
            labels: dict[str, dict[PodRef, StoredLabels]] = {}
            # The held (namespace, pod) keys, not new ones from the rows: what a reload
            # allocates and keeps, amid the rows it reads and frees, pins the heap's arenas
            # (after a database outage the worker rested 100 MB higher).
            held_refs = {
                (cluster, *ref): ref for cluster, pods in held_labels.items() for ref in pods
            }
            for cluster, ns, pod, text in conn.execute(
                _streamed(
                    select(pl.c.cluster, pl.c.namespace, pl.c.pod, pl.c.labels_json).where(
                        pl.c.cluster.in_(clusters)
                    )
                )
            ):
                ref = held_refs.get((cluster, ns, pod))
                if ref is None:
                    if pod not in names:
                        continue  # no series of it was read: a pod gone for hours
                    ref = (name(ns, ns), name(pod, pod))
                read = json.loads(text)  # whatever formatting stored it: compared parsed
                held = held_labels.get(cluster, {}).get(ref)
                if held is None or (
                    held != labels_digest(read) if isinstance(held, bytes) else held != read
                ):
                    held = labels_digest(read)
                labels.setdefault(cluster, {})[ref] = held
            del held_refs, names
        self._ids = ids
        self._newest = newest
        self._below = {}
        self._labels = labels
        self._held = ({}, {})
        self._loaded = True
        self._adopt_kinds = read_anew

    @property
    def loaded(self) -> bool:
        """Whether the in-memory maps are held (no load before the next write)."""
        return self._loaded

    def prepare(self) -> None:
        """Load the in-memory maps unless they are loaded."""
        if not self._loaded:
            self.load()

    def invalidate(self) -> None:
        """Forget the in-memory maps; the next write reloads them from the database."""
        self._loaded = False

    def _meet(self, clusters: Collection[str]) -> bool:
        """Read the maps of ``clusters`` too, unless they are held; whether it read."""
        new = set(clusters).difference(self._clusters)
        if not new:
            return False
        self._clusters |= new
        self.load()
        return True

    def write(
        self, batch: Batch, now_ms: int, conn: Connection | None = None, against_head: bool = False
    ) -> WriteResult:
        """Write ``batch`` (see the module's docstring). ``conn``: inside that connection's
        transaction, each attempt a savepoint (the caller commits, and calls ``invalidate``
        when it does not: the in-memory maps learn the writes at each savepoint);
        ``against_head`` (with ``conn``): skip the samples whose exact rows the head holds, and
        the labels of pods whose labels are stored."""
        self.prepare()
        self._meet((batch.cluster,))
        rejected: list[Rejection] = []
        stored = 0
        if against_head and conn is not None:
            batch, stored = self._unstored(conn, batch)
        # One pass checks the values and finds the rows of the series already stored (the
        # common case: every sample fits); the general checks run only when something is off.
        first = self._fresh_rows(batch.samples, self._ids)
        # Series not held may be another cluster's (a batch whose samples name a cluster other
        # than its own): its maps are read, so that its stored samples are not written again.
        if first.missing and self._meet({key.cluster for key in first.missing}):
            first = self._fresh_rows(batch.samples, self._ids)
        planned: _Rows | None = first
        samples = batch.samples
        missing = first.missing
        if not first.fits or any(_key_problem(key) is not None for key in missing):
            planned = None
            samples, missing = self._checked(batch, rejected)
        labels = self._checked_labels(batch, rejected)
        try:
            written, skipped = self._attempt(samples, labels, now_ms, missing, planned, conn)
        except BaseException as error:
            if not (isinstance(error, Exception) and is_content_error(error)):
                # Another writer may have changed the database meanwhile: reload before the
                # next write.
                self.invalidate()
                raise
            checked = len(rejected)
            try:
                isolation = self._isolate(list(samples), labels, now_ms, rejected, conn)
            except BaseException:
                self.invalidate()
                raise
            written, skipped = isolation.written, isolation.skipped
            log.warning(
                "the database refused %d of %d %s samples and pods' labels (%s); wrote %d "
                "samples after %d attempts",
                len(rejected) - checked,
                len(samples) + len(labels),
                batch.kind.value,
                first_line(error),
                written,
                isolation.attempts,
            )
        if conn is None and batch.samples and not batch.samples.restored:
            self._forget_gone(batch, now_ms)
        return WriteResult(
            written=written, skipped_duplicates=skipped + stored, rejected=tuple(rejected)
        )

    def _forget_gone(self, batch: Batch, now_ms: int) -> None:
        """Every ``_SWEEP_EVERY_MS``, drop from the maps the series of the batch's kind whose
        newest sample is ``FORGET_AFTER_MS`` older than the batch's (or than now, when the
        batch is stamped ahead of it), and the labels of their pods unless the batch has them."""
        kind = batch.samples.keys[0].kind  # a batch is of one kind
        last = self._swept.setdefault(kind, now_ms)
        if now_ms - last < _SWEEP_EVERY_MS:
            return
        self._swept[kind] = now_ms
        horizon = min(max(batch.samples.timestamps_ms), now_ms) - FORGET_AFTER_MS
        keys = [key for key in self._ids if key.kind is kind]
        sids = [self._ids[key] for key in keys]
        gone = [
            (key, sid)
            for key, sid, newest in zip(keys, sids, self._newest.timestamps(sids), strict=True)
            if newest is not None and newest < horizon
        ]
        del keys, sids
        for key, sid in gone:
            del self._ids[key]
            self._below.pop(sid, None)
        self._newest.forget([sid for _key, sid in gone])
        polled = batch.pod_labels
        for key, _sid in gone:
            ref = (key.namespace, key.pod)
            if key.pod and not (key.cluster == batch.cluster and ref in polled):
                self._labels.get(key.cluster, {}).pop(ref, None)
        if gone:
            log.debug("forgot %d %s series not written for an hour", len(gone), kind.value)

    def _unstored(self, conn: Connection, batch: Batch) -> tuple[Batch, int]:
        """``batch`` without the samples whose exact rows (series, timestamp, values) the head
        holds, read in one statement over the batch's series and time range, and without the
        labels of pods whose labels are stored (the leader's own polls are newer); and how
        many samples were left out. Series without an id have no rows."""
        stored_labels = self._labels.get(batch.cluster, {})
        if any(ref in stored_labels for ref in batch.pod_labels):
            labels = {r: v for r, v in batch.pod_labels.items() if r not in stored_labels}
            batch = Batch(batch.kind, batch.samples, labels, batch.rejections, batch.cluster)
        samples = batch.samples
        sids = {self._ids[key] for key in samples.keys if key in self._ids}
        if not sids:
            return batch, 0
        lo, hi = min(samples.timestamps_ms), max(samples.timestamps_ms)
        held = {
            (sid, ts, digest(window, cpu, memory))
            for sid, (ts, window, cpu, memory) in heads.read(conn, sorted(sids), lo, hi)
        }
        if not held:
            return batch, 0
        ids = self._ids
        kept = Samples(restored=samples.restored)
        for sample in samples:
            sid = ids.get(sample.key)
            mark = digest(sample.window_ms, sample.cpu_nanocores, sample.memory_bytes)
            if sid is None or (sid, sample.timestamp_ms, mark) not in held:
                kept.append(sample)
        left_out = len(samples) - len(kept)
        if not left_out:
            return batch, 0
        return Batch(batch.kind, kept, batch.pod_labels, batch.rejections, batch.cluster), left_out

    # --- checks against the columns, before anything is sent ----------------------------------

    def _checked(
        self, batch: Batch, rejected: list[Rejection]
    ) -> tuple[Samples, dict[SeriesKey, int]]:
        """The samples that fit their columns, with a rejection added for each one that does
        not, and the series not stored yet (with their first timestamp). Series already stored
        are known to fit. The general path: ``write`` takes it only when its first pass over
        the batch (``_fresh_rows``) found a value or a new series' name that does not fit."""
        known = self._ids
        key_problems: dict[SeriesKey, tuple[str, str] | None] = {}
        kept = Samples()
        missing: dict[SeriesKey, int] = {}
        for sample in batch.samples:
            key = sample.key
            problem = None
            if key not in known:
                if key not in key_problems:
                    key_problems[key] = _key_problem(key)
                problem = key_problems[key]
            if problem is None and (value_problem := _value_problem(sample)) is not None:
                problem = (OUT_OF_RANGE, value_problem)
            if problem is not None:
                rejected.append(_sample_rejection(sample, *problem))
                continue
            if key not in known and key not in missing:
                missing[key] = sample.timestamp_ms
            kept.append(sample)
        return kept, missing

    def _checked_labels(
        self, batch: Batch, rejected: list[Rejection]
    ) -> dict[LabelRef, Mapping[str, str]]:
        """The changed pod labels that fit their columns, with a rejection added for each pod's
        labels that do not. Labels already stored are known to fit."""
        labels: dict[LabelRef, Mapping[str, str]] = {}
        for ref, pod_labels in self._changed_labels(batch.cluster, batch.pod_labels).items():
            label_problem = _labels_problem(ref, pod_labels)
            if label_problem is None:
                labels[ref] = pod_labels
            else:
                rejected.append(_labels_rejection((ref, pod_labels), *label_problem))
        return labels

    # --- one attempt: one transaction ----------------------------------------------------------

    def _attempt(
        self,
        samples: Samples,
        labels: Mapping[LabelRef, Mapping[str, str]],
        now_ms: int,
        missing: Mapping[SeriesKey, int] | None = None,
        planned: _Rows | None = None,
        outer: Connection | None = None,
    ) -> tuple[int, int]:
        """Write ``samples`` and ``labels`` in one transaction (a savepoint of ``outer``'s);
        the in-memory maps keep what it wrote only once it has committed (the new series' ids
        are held during it, for its rows, and taken out again if it fails). ``missing``: the
        series of ``samples`` not stored yet, when the caller knows them; ``planned``:
        ``_fresh_rows`` of ``samples`` over the known series, when the caller has it (the rows
        of the missing ones are added here)."""
        ids = self._ids
        added: dict[SeriesKey, int] = {}
        try:
            with self._transaction(outer) as conn:
                added = self._resolve_ids(conn, samples, missing)
                ids.update(added)  # taken out again below if the transaction does not commit
                if planned is None:
                    planned = self._fresh_rows(samples, ids)
                elif planned.pending:
                    planned.add(self._fresh_rows(planned.pending, ids))
                if planned.unknown and self._learn_compacted_digests(conn, planned.unknown):
                    planned = self._fresh_rows(samples, ids)
                rows, newest, below = planned.rows, planned.newest, planned.below
                if rows:
                    self._head.append(conn, rows)
                if labels:
                    self._upsert_labels(conn, labels, now_ms)
        except BaseException:
            self._head.forget()
            for key in added:
                ids.pop(key, None)
            raise
        if samples and not samples.restored and samples.keys[0].kind in self._adopt_kinds:
            self._ids = _adopting(ids, samples)  # a batch is of one kind
            self._adopt_kinds.discard(samples.keys[0].kind)
        self._newest.update(newest.timestamps, newest.digests)
        for sids, stamps, marks in newest.columns:  # other series than the maps': any order
            self._newest.set_from(sids, stamps, marks)
        for sid, seen in below.items():
            if seen is None:
                self._below.pop(sid, None)
            else:
                self._below[sid] = seen
        for (cluster, ref), pod_labels in labels.items():
            known = self._labels.setdefault(cluster, {})
            known.pop(ref, None)  # keyed by the batch's (namespace, pod), not one load read
            known[ref] = pod_labels
        return len(rows), len(samples) - len(rows)

    @contextmanager
    def _transaction(self, outer: Connection | None) -> Iterator[Connection]:
        if outer is None:
            with self._engine.begin() as conn:
                yield conn
        else:
            with outer.begin_nested():
                yield outer

    def _learn_compacted_digests(self, conn: Connection, unknown: Mapping[int, int]) -> bool:
        """Digests of stored newest samples the writer did not know: those of series whose
        newest sample was compacted before this writer loaded (the head had no row of them),
        read from their chunks when such a sample is polled again (after a restart right after
        compaction), so the repeat is skipped as it would be otherwise. ``unknown``: series id
        to that newest timestamp. Whether any was learned."""
        c = schema.chunks
        wanted = list(unknown.items())
        learned = False
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            for sid, payload in conn.execute(
                select(c.c.series_id, c.c.payload)
                .where(c.c.payload.is_not(None))
                .where(
                    tuple_(c.c.series_id, c.c.last_ms).in_(wanted[start : start + _LOOKUP_CHUNK])
                )
            ):
                stored = decode_samples(payload)
                self._newest.set_digest(
                    sid,
                    digest(
                        stored.windows_ms[-1], stored.cpu_nanocores[-1], stored.memory_bytes[-1]
                    ),
                )
                learned = True
        return learned

    def _fresh_rows(self, samples: Samples, ids: Mapping[SeriesKey, int]) -> _Rows:
        """``_fresh_rows_one_by_one``'s answer (its rows in another order, at most): when each
        stored series of the batch appears once, the samples newer than their series' newest
        (nearly all of a steady poll) column by column, and only the others one by one."""
        split = _fresh_split(samples, ids, self._newest, self._below)
        if split is None:
            return self._fresh_rows_one_by_one(samples, ids)
        found, rest = split
        if rest:
            other = self._fresh_rows_one_by_one(rest, ids)  # stored series, none in ``found``
            found.rows += other.rows
            found.newest.timestamps.update(other.newest.timestamps)
            found.newest.digests.update(other.newest.digests)
            found.newest.columns.extend(other.newest.columns)
            found.below.update(other.below)
            found.unknown.update(other.unknown)
        return found

    def _fresh_rows_one_by_one(self, samples: Samples, ids: Mapping[SeriesKey, int]) -> _Rows:
        """The head rows to write, and the changes they make to the newest and below-newest
        (timestamp, digest) of their series (``None``: forget the series' below-newest one);
        see ``_Rows`` for what else the same pass finds. Plain integers and as few dictionary
        operations as the rule allows: it runs once per sample.

        The fast path takes a series' first written sample of the batch when it is newer than
        the series' stored newest (or the series has none) and the series has no below-newest
        one: nothing can make it a duplicate, so it only records the new newest. Whether a
        series was written before in the batch is then ``sid in new_ts or sid in first_ts``:
        the general path records ``first_ts`` for every sample it writes, and takes a fast
        sample's (timestamp, digest) from ``new_ts``, still untouched, at its next sample."""
        known_below = self._below
        any_below = bool(known_below)
        ts_min, ts_max, window_min, window_max = _TS_MIN, _TS_MAX, _WINDOW_MIN, _WINDOW_MAX
        cpu_min, cpu_max, memory_min, memory_max = _CPU_MIN, _CPU_MAX, _MEMORY_MIN, _MEMORY_MAX
        found = _Rows()
        rows, below, unknown = found.rows, found.below, found.unknown
        new_ts, new_mark = found.newest.timestamps, found.newest.digests
        first_ts: dict[int, int] = {}
        first_mark: dict[int, int] = {}
        several: dict[int, set[tuple[int, int]]] = {}
        append = rows.append
        fits = True
        pending = found.pending
        # The stored newest (timestamp, digest) of every sample's series, read in one pass.
        sids = list(map(ids.get, samples.keys))
        looked_up = [-1 if sid is None else sid for sid in sids]
        tops, digests = self._newest.timestamps(looked_up), self._newest.digests(looked_up)
        for (key, ts, window, cpu, memory), sid, top, held in zip(
            samples.rows(), sids, tops, digests, strict=True
        ):
            if not (
                ts_min <= ts <= ts_max
                and window_min <= window <= window_max
                and cpu_min <= cpu <= cpu_max
                and memory_min <= memory <= memory_max
            ):
                fits = False
            if sid is None:
                if key not in found.missing:
                    found.missing[key] = ts
                pending.append(Sample(key, ts, window, cpu, memory))
                continue
            mark = digest(window, cpu, memory)
            if (
                (top is None or ts > top)
                and sid not in new_ts
                and not (first_ts and sid in first_ts)
                and not (any_below and sid in known_below)
            ):
                new_ts[sid] = ts
                new_mark[sid] = mark
                append((ts, sid, window, cpu, memory))
                continue
            if ts == top:
                if held == mark:
                    continue
                if held is None:
                    unknown[sid] = ts
            if any_below and known_below.get(sid) == (ts, mark):
                continue
            seen = first_ts.get(sid)
            if seen is None and sid in new_ts:  # its first sample took the fast path
                seen = first_ts[sid] = new_ts[sid]
                first_mark[sid] = new_mark[sid]
            if seen is None:
                first_ts[sid] = ts
                first_mark[sid] = mark
            else:
                written = several.get(sid)
                if written is None:
                    written = several[sid] = {(seen, first_mark[sid])}
                if (ts, mark) in written:
                    continue
                written.add((ts, mark))
            current = new_ts.get(sid, top)
            if current is None or ts > current:
                new_ts[sid] = ts
                new_mark[sid] = mark
                if sid in known_below or sid in below:
                    below[sid] = None
            elif ts == current:
                new_mark[sid] = mark  # another sample at the newest timestamp
            else:
                below[sid] = (ts, mark)
            append((ts, sid, window, cpu, memory))
        found.fits = fits
        return found

    def _resolve_ids(
        self,
        conn: Connection,
        samples: Samples,
        missing: Mapping[SeriesKey, int] | None = None,
    ) -> dict[SeriesKey, int]:
        """Ids of the series of ``samples`` not held yet, inserting the new ones (and of any
        series another writer added since): the caller adds them to the held ones, and takes
        them out again if the transaction does not commit. Not a copy of the held map with
        them: at 150,000 pods that was 10 MB and a few milliseconds at every poll that saw a
        new pod."""
        if missing is None:
            missing = {}
            for key, ts in zip(samples.keys, samples.timestamps_ms, strict=True):
                if key not in self._ids and key not in missing:
                    missing[key] = ts
        if not missing:
            return {}
        s = schema.series
        # The batch's own key objects are kept, not equal copies read back (200,000 keys and
        # their names at the first poll of a large cluster).
        batch_keys = {_identity(key): key for key in missing}
        # At once, in the unique index's order (``store.bulk``: the 204,000 series of a first
        # poll at 150,000 pods in 1.5 s against 10.6 s of upserts on PostgreSQL, 1.4 s against
        # 4.6 s on SQLite); the upserts when the database refuses that.
        inserted = bulk.insert_new(
            conn,
            "series",
            _SERIES_COLUMNS,
            _series_rows(batch_keys, missing),
        )
        if not inserted:
            statement = dialect_insert(conn, s).on_conflict_do_nothing()
            new = list(missing.items())
            # A part at a time: at the first poll of 150,000 pods the rows of 200,000 series
            # at once held about 100 MB of parameter dictionaries.
            for start in range(0, len(new), _INSERT_CHUNK):
                conn.execute(
                    statement,
                    [
                        {
                            "cluster": key.cluster,
                            "kind": key.kind.value,
                            "node": key.node,
                            "namespace": key.namespace,
                            "pod": key.pod,
                            "container": key.container,
                            "first_seen_ms": first_ms,
                            "last_seen_ms": first_ms,
                        }
                        for key, first_ms in new[start : start + _INSERT_CHUNK]
                    ],
                )
            del new
        found: dict[SeriesKey, int] = {}

        def key_of(row: Sequence[Any]) -> SeriesKey:
            kind, node, namespace, pod, container, cluster = row
            return batch_keys.get((cluster, kind, node, namespace, pod, container)) or (
                SeriesKey(Kind(kind), node, namespace, pod, container, cluster)
            )

        # New rows (ours, and any another writer added since we loaded) have larger ids than
        # any we know: one range scan finds them. Identities still missing after it (another
        # writer's rows committed out of id order) are looked up by value.
        newest_known = max(self._ids.values(), default=0)
        for sid, *row in conn.execute(
            _streamed(
                select(*_IDENTITY).where(
                    s.c.id > newest_known,
                    s.c.kind != Kind.POD.value,
                    s.c.cluster.in_(sorted({key.cluster for key in missing})),
                )
            )
        ):
            found[key_of(row)] = sid
        keys = [key for key in missing if key not in found and key not in self._ids]
        identity = tuple_(s.c.cluster, s.c.kind, s.c.node, s.c.namespace, s.c.pod, s.c.container)
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            wanted = [_identity(k) for k in chunk]
            for sid, *row in conn.execute(select(*_IDENTITY).where(identity.in_(wanted))):
                found[key_of(row)] = sid
        return found

    def _changed_labels(
        self, cluster: str, labels: Mapping[PodRef, Mapping[str, str]]
    ) -> dict[LabelRef, Mapping[str, str]]:
        """The pods whose labels differ from the stored ones. Equal labels read from the
        database are replaced by the batch's object: the poller hands the same object while a
        pod's labels do not change, so one copy is kept and the next poll compares
        identities. Labels of a batch read back from the buffer (after an outage) are not
        adopted: they are a transient copy, and adopting them would keep two."""
        known = self._labels.setdefault(cluster, {})
        changed: dict[LabelRef, Mapping[str, str]] = {}
        for ref, pod_labels in labels.items():
            stored = known.get(ref)
            if stored is pod_labels:
                continue
            if isinstance(stored, bytes):
                if stored == labels_digest(pod_labels):
                    # Keyed by the batch's (namespace, pod) too, not the one load read.
                    del known[ref]
                    known[ref] = pod_labels
                    continue
            elif stored == pod_labels:
                continue
            changed[(cluster, ref)] = pod_labels
        return changed

    def _upsert_labels(
        self, conn: Connection, labels: Mapping[LabelRef, Mapping[str, str]], now_ms: int
    ) -> None:
        # Pods whose labels the maps do not hold are new (the first poll: every pod) and go in
        # at once (``store.bulk``), the others as upserts. A stored row the maps forgot
        # refuses that: then all are upserted.
        held = self._labels
        new = sorted(ref for ref in labels if ref[1] not in held.get(ref[0], ()))
        if new and bulk.insert_new(
            conn,
            "pod_labels",
            _LABELS_COLUMNS,
            (
                (cluster, ns, pod, labels_text(labels[(cluster, (ns, pod))]), now_ms)
                for cluster, (ns, pod) in new
            ),
        ):
            if len(new) == len(labels):
                return
            labels = {ref: value for ref, value in labels.items() if ref[1] in held.get(ref[0], ())}
        pl = schema.pod_labels
        statement = dialect_insert(conn, pl)
        statement = statement.on_conflict_do_update(
            index_elements=[pl.c.cluster, pl.c.namespace, pl.c.pod],
            set_={"labels_json": statement.excluded.labels_json, "updated_ms": now_ms},
        )
        # A part at a time, as the series: at the first poll of 150,000 pods the rows of every
        # pod's labels at once (parameter dictionaries, JSON texts) held about 110 MB.
        changed = iter(labels.items())
        while part := list(islice(changed, _INSERT_CHUNK)):
            conn.execute(
                statement,
                [
                    {
                        "cluster": cluster,
                        "namespace": ns,
                        "pod": pod,
                        "labels_json": labels_text(pod_labels),
                        "updated_ms": now_ms,
                    }
                    for (cluster, (ns, pod)), pod_labels in part
                ],
            )

    # --- isolation of what the database refuses ------------------------------------------------

    def _isolate(
        self,
        samples: list[Sample],
        labels: Mapping[LabelRef, Mapping[str, str]],
        now_ms: int,
        rejected: list[Rejection],
        outer: Connection | None = None,
    ) -> _Isolation:
        """Write everything of a refused batch that the database takes; add a rejection for
        each sample and pod's labels it refuses. Samples and labels are isolated apart."""
        isolation = _Isolation()

        def write_samples(part: list[Sample]) -> tuple[int, int]:
            return self._attempt(Samples.of(part), {}, now_ms, outer=outer)

        def write_labels(part: list[tuple[LabelRef, Mapping[str, str]]]) -> tuple[int, int]:
            return self._attempt(Samples(), dict(part), now_ms, outer=outer)

        _bisect(samples, write_samples, _sample_rejection, isolation, rejected)
        _bisect(list(labels.items()), write_labels, _labels_rejection, isolation, rejected)
        return isolation


def _fresh_split(
    samples: Samples,
    ids: Mapping[SeriesKey, int],
    newest: NewestTable,
    below: Mapping[int, tuple[int, int]],
) -> tuple[_Rows, Samples] | None:
    """``SampleWriter._fresh_rows_one_by_one`` of the samples newer than their series' stored
    newest one and without a below-newest one (nearly all of a steady poll), in column-wide
    passes that run in C (the values as int64 arrays), and the other samples of stored series,
    which the rule must see one by one. ``None`` when a stored series appears more than once
    (the whole batch then goes one by one): so each series is in one part only, and the two
    parts' answers add up; ``None`` too when a value does not fit in 64 bits (one by one
    rejects it)."""
    keys, count = samples.keys, len(samples.keys)
    if not count:
        return None
    try:
        timestamps = np.fromiter(samples.timestamps_ms, np.int64, count)
        windows = np.fromiter(samples.windows_ms, np.int64, count)
        cpus = np.fromiter(samples.cpu_nanocores, np.int64, count)
        memories = np.fromiter(samples.memory_bytes, np.int64, count)
    except (OverflowError, TypeError, ValueError):
        return None
    if not (_TS_MIN <= timestamps.min() and timestamps.max() <= _TS_MAX):
        return None  # (a timestamp past the column's range: one by one, which rejects it)
    sid_list = list(map(ids.get, keys))
    sids = _ids_column(sid_list)
    found = _Rows()
    found.fits = bool(
        _WINDOW_MIN <= windows.min()
        and windows.max() <= _WINDOW_MAX
        and _CPU_MIN <= cpus.min()
        and cpus.max() <= _CPU_MAX
        and _MEMORY_MIN <= memories.min()
        and memories.max() <= _MEMORY_MAX
    )
    positions: npt.NDArray[np.intp] | None = None  # of the stored series' samples, if not all
    known = sids >= 0
    if not known.all():  # series not stored yet: pending, as one by one would leave them
        for i in np.flatnonzero(~known).tolist():
            found.missing.setdefault(keys[i], samples.timestamps_ms[i])
            found.pending.append(samples[i])
        positions = np.flatnonzero(known)
        sids, timestamps = sids[positions], timestamps[positions]
        windows, cpus, memories = windows[positions], cpus[positions], memories[positions]
    ordered = np.sort(sids)
    repeated = bool((ordered[1:] == ordered[:-1]).any())
    del ordered  # (its 1.6 MB at 200,000 series, while the write goes on)
    if repeated:
        return None
    fresh = newest.newer(sids, timestamps)
    if below:
        fresh &= ~np.isin(sids, np.fromiter(below, np.int64, len(below)))
    rest = Samples()
    if not fresh.all():
        others = np.flatnonzero(~fresh)
        for i in (others if positions is None else positions[others]).tolist():
            rest.append(samples[i])
        sids, timestamps = sids[fresh], timestamps[fresh]
        windows, cpus, memories = windows[fresh], cpus[fresh], memories[fresh]
        positions = np.flatnonzero(fresh) if positions is None else positions[fresh]
    if len(sids):
        lists = (
            samples.timestamps_ms,
            sid_list,
            samples.windows_ms,
            samples.cpu_nanocores,
            samples.memory_bytes,
        )
        found.rows.add_columns(timestamps, sids, windows, cpus, memories, source=(lists, positions))
        found.newest.columns.append((sids, timestamps, digests(windows, cpus, memories)))
    return found, rest


def _ids_column(sids: list[int | None]) -> IntArray:
    """Series ids as a column, -1 where there is none (``None``; a few new series a poll, each
    found by a scan that runs in C)."""
    if None in sids:
        sids = sids.copy()
        at = -1
        with suppress(ValueError):  # no more
            while True:
                at = sids.index(None, at + 1)
                sids[at] = -1
    return np.fromiter(sids, np.int64, len(sids))


def _streamed(statement: Any) -> Any:
    """``statement`` read a part at a time as it is iterated: on PostgreSQL through a
    server-side cursor. A client-side one holds the whole result in libpq until the last row
    is read: a restart's reload at 150,000 pods peaked 38 MB higher on PostgreSQL than on
    SQLite, whose cursor reads as it goes anyway."""
    return statement.execution_options(stream_results=True, yield_per=_LOAD_PART)


def _identity(key: SeriesKey) -> tuple[str, str, str, str, str, str]:
    """A key as the series table's unique columns hold it."""
    return (key.cluster, key.kind.value, key.node, key.namespace, key.pod, key.container)


_SERIES_COLUMNS = (
    "cluster",
    "kind",
    "node",
    "namespace",
    "pod",
    "container",
    "first_seen_ms",
    "last_seen_ms",
)


_LABELS_COLUMNS = ("cluster", "namespace", "pod", "labels_json", "updated_ms")


def _series_rows(
    batch_keys: Mapping[tuple[str, str, str, str, str, str], SeriesKey],
    first_ms: Mapping[SeriesKey, int],
) -> Iterator[tuple[str | int, ...]]:
    """New series' rows (``_SERIES_COLUMNS``) in the order of their unique index."""
    for identity in sorted(batch_keys):
        ms = first_ms[batch_keys[identity]]
        yield (*identity, ms, ms)


def _adopting(ids: dict[SeriesKey, int], samples: Samples) -> dict[SeriesKey, int]:
    """``ids`` keyed by ``samples``' own key objects where they are equal to a known one."""
    adopted: dict[SeriesKey, int] = {}
    for key in samples.keys:
        sid = ids.get(key)
        if sid is not None:
            adopted[key] = sid
    for key, sid in ids.items():
        adopted.setdefault(key, sid)
    return adopted


def _bisect(
    items: list[T],
    attempt: Callable[[list[T]], tuple[int, int]],
    reject: Callable[[T, str, str], Rejection],
    isolation: _Isolation,
    rejected: list[Rejection],
) -> None:
    """Attempt ``items``; when the database refuses them for their content, attempt each half
    in its own transaction, down to single items, which are rejected. Transient failures are
    raised."""
    stack: list[list[T]] = [items] if items else []
    while stack:
        group = stack.pop()
        isolation.attempts += 1
        try:
            written, skipped = attempt(group)
        except Exception as error:
            if not is_content_error(error):
                raise
            if len(group) == 1 or isolation.found >= MAX_ISOLATED:
                isolation.found += len(group)
                rejected.extend(
                    reject(item, DATABASE_REJECTED, first_line(error)) for item in group
                )
            else:
                middle = len(group) // 2
                stack += (group[middle:], group[:middle])
            continue
        isolation.written += written
        isolation.skipped += skipped


# --- rejections ----------------------------------------------------------------------------------


def _shown(text: str, limit: int = 80) -> str:
    """``text`` safe to print: NUL, control characters and lone surrogates escaped, cut to
    ``limit`` characters with the full length said."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}... ({len(text)} characters)"


def _sample_rejection(sample: Sample, reason: str, detail: str) -> Rejection:
    key = sample.key
    if key.kind is Kind.NODE:
        return Rejection(Kind.NODE, _shown(key.node), reason, detail)
    return Rejection(
        key.kind,
        f"{_shown(key.pod)}/{_shown(key.container)}",
        reason,
        detail,
        _shown(key.namespace),
    )


def _labels_rejection(
    item: tuple[LabelRef, Mapping[str, str]], reason: str, detail: str
) -> Rejection:
    (_cluster, (namespace, pod)), _labels = item
    return Rejection(
        Kind.CONTAINER, _shown(pod), reason, f"labels: {detail}", namespace=_shown(namespace)
    )


def _key_problem(key: SeriesKey) -> tuple[str, str] | None:
    for name, length in _KEY_LENGTHS:
        value: str = getattr(key, name)
        if len(value) > length:
            return OUT_OF_RANGE, f"{name} has {len(value)} characters; the column holds {length}"
        if _BAD_TEXT.search(value):
            return INVALID_TEXT, f"{name} '{_shown(value)}' holds NUL or a lone surrogate"
    return None


def _value_problem(sample: Sample) -> str | None:
    for name, value, low, high in (
        ("timestamp_ms", sample.timestamp_ms, _TS_MIN, _TS_MAX),
        ("window_ms", sample.window_ms, _WINDOW_MIN, _WINDOW_MAX),
        ("cpu_nanocores", sample.cpu_nanocores, _CPU_MIN, _CPU_MAX),
        ("memory_bytes", sample.memory_bytes, _MEMORY_MIN, _MEMORY_MAX),
    ):
        if not low <= value <= high:
            return f"{name} {value} is outside the column's range [{low}, {high}]"
    return None


def _labels_problem(ref: LabelRef, labels: Mapping[str, str]) -> tuple[str, str] | None:
    cluster, (namespace, pod) = ref
    for name, value, length in (
        ("cluster", cluster, _CLUSTER_LENGTH),
        ("namespace", namespace, _NAMESPACE_LENGTH),
        ("pod", pod, _POD_LENGTH),
    ):
        if len(value) > length:
            return OUT_OF_RANGE, f"{name} has {len(value)} characters; the column holds {length}"
    for text in (cluster, namespace, pod, *labels.keys(), *labels.values()):
        if _BAD_TEXT.search(text):
            return INVALID_TEXT, f"'{_shown(text)}' holds NUL or a lone surrogate"
    return None

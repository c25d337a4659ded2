"""The write queue: normalized batches waiting for the database, oldest first.

While the database keeps up, a batch waits here as it is (no copy, no encoding) for the
moment it takes to write it. Once a write fails, or more than ``max_raw`` batches wait, the
waiting batches are *parked*: encoded compactly (msgpack + zlib, ~10x smaller than the
objects) and written to the spool folder, where they survive a restart of the process or of
the container (the folder is on the data volume or an ``emptyDir``); without a usable spool
folder they are kept encoded in memory. Both places have a byte budget; beyond it the oldest
parked batches are dropped and counted, never the newest.

A batch leaves the queue only after the database committed it (``done``), so a crash between
the two writes it again at the next start, where the writer collapses the exact duplicates.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from recorder.domain import DEFAULT_CLUSTER, Batch, Kind, Samples, SeriesKey
from recorder.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_SPOOL_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_RAW = 4
RESTORED_PART_SAMPLES = 20_000
"""Most samples of a batch read back packed that are made into Python objects at once (the
writer writes such a batch in parts of this size). At 150,000 pods a parked poll read back
holds about 34 MB; a part of 50,000 samples added 25 MB to it while it was written, one of
20,000 adds about 11."""
_MAGIC_V4 = b"KMRB4\n"
_MAGIC_V3 = b"KMRB3\n"
_MAGIC = b"KMRB2\n"
_MAGIC_V1 = b"KMRB1\n"
_ZLIB_LEVEL = 1
_INFLATE_STEP = 1 << 20
_NAME = re.compile(r"(\d{20})\.(node|container)\.(\d+)\.batch")


class _Wire(msgspec.Struct, array_like=True, gc=False):
    """A batch on disk: every distinct text once (``strings``), each sample's key as indexes
    into it, one list per value column; each distinct set of pod labels once (``label_sets``;
    the pods of a ReplicaSet share theirs) and per pod (namespace, pod, label set) indexes.

    Read back, a batch of 200,000 samples holds each name once instead of once per sample (at
    150,000 pods: about 60 MB instead of 180 MB while the batch is written after an outage)."""

    kind: str
    strings: list[str]
    node: list[int]
    namespace: list[int]
    pod: list[int]
    container: list[int]
    cluster: list[int]
    ts_ms: list[int]
    window_ms: list[int]
    cpu: list[int]
    memory: list[int]
    label_sets: list[dict[str, str]]
    labels: list[tuple[int, int, int]]
    batch_cluster: str


class _WireV3(msgspec.Struct, array_like=True, gc=False):
    """``_Wire`` with its numbers packed: the five key columns' indexes (node, namespace, pod,
    container, cluster, one column after the other) and the pods' (namespace, pod, label
    set) indexes as little-endian int32, the value columns as little-endian int64. Read back,
    ``_Wire``'s columns were about 2.7 million Python ints and lists at 150,000 pods (110
    MB while a batch is written after an outage); these are read without an object per
    number. Written when every value fits in 64 bits (else ``_Wire``), kept to this
    process's queue and spool: batches handed to another replica are ``_Wire``, which every
    release since the handover reads."""

    kind: str
    strings: list[str]
    keys: bytes
    ts_ms: bytes
    window_ms: bytes
    cpu: bytes
    memory: bytes
    label_sets: list[dict[str, str]]
    labels: bytes
    batch_cluster: str


class _WireV4(msgspec.Struct, array_like=True, gc=False):
    """``_WireV3`` with its texts as one: ``text`` is every distinct text one after the other,
    ``text_ends`` where each ends (characters, little-endian int32). Read back, ``_WireV3``'s
    texts were a string object each (about 155,000 at 150,000 pods), all made at once and
    held as long as the batch was being written; these are one string, and a part's texts
    are cut from it when the part is made (``_Texts``). Its numbers are read as views of the
    inflated bytes, not copied out of them (``_WireV3``'s copies doubled them while it was
    read)."""

    kind: str
    text: str
    text_ends: memoryview
    keys: memoryview
    ts_ms: memoryview
    window_ms: memoryview
    cpu: memoryview
    memory: memoryview
    label_sets: list[dict[str, str]]
    labels: memoryview
    batch_cluster: str


class _WireV1(msgspec.Struct, array_like=True, gc=False):
    """A batch parked by versions before the ``_Wire`` above (read back, never written): one
    text per sample and column, pod labels as (namespace, pod, labels). ``cluster`` and
    ``batch_cluster`` came later, last: without them the batch is of the default cluster."""

    kind: str
    node: list[str]
    namespace: list[str]
    pod: list[str]
    container: list[str]
    ts_ms: list[int]
    window_ms: list[int]
    cpu: list[int]
    memory: list[int]
    labels: list[tuple[str, str, dict[str, str]]]
    cluster: list[str] = []
    batch_cluster: str = DEFAULT_CLUSTER


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)
_decoder_v3 = msgspec.msgpack.Decoder(_WireV3)
_decoder_v4 = msgspec.msgpack.Decoder(_WireV4)
_INDEX = np.dtype("<i4")
_VALUE = np.dtype("<i8")
_decoder_v1 = msgspec.msgpack.Decoder(_WireV1)


def encode_batch(batch: Batch, *, portable: bool = False) -> bytes:
    """A batch's samples and pod labels (not its rejections: they were counted already), as
    ``_WireV4``, or ``_Wire`` when ``portable`` (for another replica, which may run an earlier
    release) or when a value does not fit in 64 bits."""
    samples = batch.samples
    keys = samples.keys
    index: dict[str, int] = {}
    at = index.setdefault  # a text's index: the first one given to it

    def column(texts: Iterator[str]) -> np.ndarray[Any, np.dtype[np.int32]]:
        return np.fromiter((at(text, len(index)) for text in texts), _INDEX, len(keys))

    label_sets: list[dict[str, str]] = []
    set_of: dict[int, int] = {}  # by identity: the poller hands one object per label set
    pods: tuple[list[int], list[int], list[int]] = ([], [], [])  # namespace, pod, label set
    for (namespace, pod), labels in batch.pod_labels.items():
        found = set_of.get(id(labels))
        if found is None:
            found = set_of[id(labels)] = len(label_sets)
            label_sets.append(dict(labels))
        pods[0].append(at(namespace, len(index)))
        pods[1].append(at(pod, len(index)))
        pods[2].append(found)
    key_columns = [
        column(k.node for k in keys),
        column(k.namespace for k in keys),
        column(k.pod for k in keys),
        column(k.container for k in keys),
        column(k.cluster for k in keys),
    ]
    strings = list(index)  # in index order: dicts keep insertion order
    index.clear()  # about 15 MB at 150,000 pods, not held while the batch is written out
    values = (
        samples.timestamps_ms,
        samples.windows_ms,
        samples.cpu_nanocores,
        samples.memory_bytes,
    )
    packed = None if portable else _packed(values)
    if packed is None:
        at_node, at_namespace, at_pod, at_container, at_cluster = (c.tolist() for c in key_columns)
        wire = _Wire(
            batch.kind.value,
            strings,
            at_node,
            at_namespace,
            at_pod,
            at_container,
            at_cluster,
            *values,
            label_sets,
            list(zip(*pods, strict=True)),
            batch.cluster,
        )
        return _MAGIC + zlib.compress(_encoder.encode(wire), _ZLIB_LEVEL)
    # ``_WireV4`` written field by field into one zlib stream: its msgpack encoding (about
    # 20 MB at 150,000 pods, for 4 MB compressed) is never held whole. While the database is
    # down a poll parks its batch as it is queued, so what this holds adds to the poll's peak.
    out = _Deflated(_MAGIC_V4)
    out.raw(_array_header(len(_WireV4.__struct_fields__)))
    out.value(batch.kind.value)
    out.value("".join(strings))
    ends = np.cumsum(np.fromiter(map(len, strings), np.int64, len(strings)))
    del strings
    if ends.size and ends[-1] > np.iinfo(_INDEX).max:
        raise ValueError("the batch's texts are longer than 2**31 characters")
    out.binary([ends.astype(_INDEX)])
    out.binary(key_columns)
    for column_bytes in packed:
        out.binary([column_bytes])
    out.value(label_sets)
    out.binary([np.array(c, dtype=_INDEX) for c in pods])
    out.value(batch.cluster)
    return out.finish()


class _Deflated:
    """msgpack written a piece at a time into one zlib stream (as ``zlib.compress`` of the
    whole would make it): a value, a bin from its parts."""

    def __init__(self, magic: bytes) -> None:
        self._compressor = zlib.compressobj(_ZLIB_LEVEL)
        self._out = [magic]

    def raw(self, data: bytes | memoryview) -> None:
        compressed = self._compressor.compress(data)
        if compressed:
            self._out.append(compressed)

    def value(self, value: object) -> None:
        self.raw(_encoder.encode(value))

    def binary(self, parts: list[Any]) -> None:
        """A bin of ``parts`` (bytes or C-contiguous arrays) one after the other."""
        views = [memoryview(part).cast("B") for part in parts]
        self.raw(_bin_header(sum(v.nbytes for v in views)))
        for view in views:
            self.raw(view)

    def finish(self) -> bytes:
        self._out.append(self._compressor.flush())
        return b"".join(self._out)


def _array_header(length: int) -> bytes:
    """msgpack's header of an array of ``length`` items (its shortest form, as msgspec's)."""
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _bin_header(length: int) -> bytes:
    """msgpack's header of a bin of ``length`` bytes (its shortest form, as msgspec's)."""
    if length < 1 << 8:
        return b"\xc4" + length.to_bytes(1, "big")
    if length < 1 << 16:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def _packed(columns: tuple[list[int], ...]) -> tuple[bytes, bytes, bytes, bytes] | None:
    try:
        ts, window, cpu, memory = (np.array(c, dtype=_VALUE).tobytes() for c in columns)
    except OverflowError:  # exact integers beyond 64 bits: the lists keep them
        return None
    return ts, window, cpu, memory


def for_another_replica(data: bytes) -> bytes:
    """``data`` (``encode_batch``'s) as a replica of an earlier release reads it."""
    if data.startswith((_MAGIC_V4, _MAGIC_V3)):
        return encode_batch(decode_batch(data), portable=True)
    return data


def decode_batch(data: bytes) -> Batch:
    """The batch ``encode_batch`` wrote (or an earlier version's); ``ValueError`` when the
    bytes are not one."""
    if data.startswith(_MAGIC_V1):
        return _decode_v1(data[len(_MAGIC_V1) :])
    if data.startswith(_MAGIC_V4):
        return _restore_packed(data[len(_MAGIC_V4) :], _decoder_v4).whole()
    if data.startswith(_MAGIC_V3):
        return _restore_packed(data[len(_MAGIC_V3) :], _decoder_v3).whole()
    if not data.startswith(_MAGIC):
        raise ValueError("not a spooled batch (bad header)")
    try:
        wire = _decoder.decode(zlib.decompress(data[len(_MAGIC) :]))
        kind = Kind(wire.kind)
        columns = (wire.node, wire.namespace, wire.pod, wire.container, wire.cluster)
        lengths = {len(c) for c in columns}
        lengths |= {len(wire.ts_ms), len(wire.window_ms), len(wire.cpu), len(wire.memory)}
        if len(lengths) > 1:
            raise ValueError("columns of different lengths")
        text = wire.strings
        keys = [
            SeriesKey(kind, text[node], text[ns], text[pod], text[container], text[cluster])
            for node, ns, pod, container, cluster in zip(*columns, strict=True)
        ]
        sets = wire.label_sets
        labels = {(text[ns], text[pod]): sets[found] for ns, pod, found in wire.labels}
    except (zlib.error, msgspec.DecodeError) as exc:
        raise ValueError(f"not a spooled batch ({exc})") from exc
    except IndexError:
        raise ValueError("not a spooled batch (an index past its table)") from None
    samples = Samples(keys, wire.ts_ms, wire.window_ms, wire.cpu, wire.memory, restored=True)
    return Batch(kind, samples, labels, cluster=wire.batch_cluster)


def restore(data: bytes) -> Batch | Restored:
    """``decode_batch``, except that a packed batch (``_WireV4``, ``_WireV3``) stays packed:
    ``Restored`` makes its samples into batches a part at a time. ``ValueError`` when the
    bytes are not a batch (checked whole before any part is made)."""
    if data.startswith(_MAGIC_V4):
        return _restore_packed(memoryview(data)[len(_MAGIC_V4) :], _decoder_v4)
    if data.startswith(_MAGIC_V3):
        return _restore_packed(memoryview(data)[len(_MAGIC_V3) :], _decoder_v3)
    return decode_batch(data)


class Restored:
    """A packed batch read back: its texts once, its numbers as arrays, checked whole. Its
    samples become ``Batch`` objects (a key object and Python ints per sample) only a part at
    a time: at 150,000 pods a parked poll made whole held about 90 MB while it was written
    after an outage."""

    def __init__(
        self,
        kind: Kind,
        texts: Any,
        keys: Any,
        values: list[Any],
        pods: Any,
        label_sets: Any,
        cluster: str,
    ) -> None:
        self.kind = kind
        self.cluster = cluster
        self._texts = texts  # the texts by index (``_Texts``, or an object array)
        self._keys = keys  # (5, samples) indexes: node, namespace, pod, container, cluster
        self._values = values  # timestamps, windows, CPU, memory
        self._pods = pods  # (3, pods) indexes: namespace, pod, label set
        self._label_sets = label_sets  # object array of label dictionaries
        self.sample_count = len(values[0])

    def whole(self) -> Batch:
        return next(self.parts(max(self.sample_count, 1)))

    def parts(self, size: int) -> Iterator[Batch]:
        """The samples as batches of at most ``size`` samples, in order; each pod's labels go
        with every part that has a sample of that pod (the labels of a pod without samples
        with the first part). At least one batch, even when there are no samples."""
        if size >= self.sample_count:  # one part: every pod's labels
            yield self._part(0, size, None, None)
            return
        pairs = self._pairs(self._pods[0], self._pods[1])
        orphans = ~np.isin(pairs, self._pairs(self._keys[1], self._keys[2]))
        for start in range(0, self.sample_count, size):
            # Made by a call: nothing of a part stays in this frame while it is written.
            yield self._part(start, size, pairs, orphans if start == 0 else None)

    def _part(self, start: int, size: int, pairs: Any, orphans: Any) -> Batch:
        """Samples ``start`` to ``start + size``; the labels of the pods among them (all
        when ``pairs`` is None), and of ``orphans`` (pods without samples)."""
        keys = self._keys[:, start : start + size]
        count = keys.shape[1]
        node, namespace, pod, container, cluster = self._texts[keys]
        made = list(map(SeriesKey, [self.kind] * count, node, namespace, pod, container, cluster))
        del node, namespace, pod, container, cluster  # the texts by index: arrays of references
        samples = Samples(
            made, *(v[start : start + size].tolist() for v in self._values), restored=True
        )
        ns_of, pod_of, set_of = self._pods
        if pairs is not None:
            held = np.isin(pairs, self._pairs(keys[1], keys[2]))
            if orphans is not None:
                held |= orphans
            ns_of, pod_of, set_of = ns_of[held], pod_of[held], set_of[held]
        labels = dict(
            zip(
                zip(self._texts[ns_of], self._texts[pod_of], strict=True),
                self._label_sets[set_of],
                strict=True,
            )
        )
        return Batch(self.kind, samples, labels, cluster=self.cluster)

    @staticmethod
    def _pairs(namespaces: Any, pods: Any) -> Any:
        """One int64 per (namespace, pod) index pair."""
        return (namespaces.astype(np.int64) << 32) | pods.astype(np.int64)


class _Texts:
    """``_WireV4``'s texts by index, each made into a string object only when asked for:
    ``texts[indexes]`` is an object array shaped as ``indexes``, one object per distinct
    index (the samples of a pod share its name)."""

    def __init__(self, text: str, ends: Any) -> None:
        self._text = text
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, indexes: Any) -> Any:
        wanted = np.asarray(indexes)
        distinct, where = np.unique(wanted, return_inverse=True)
        ends = self._ends[distinct].tolist()
        starts = np.where(distinct > 0, self._ends[distinct - 1], 0).tolist()
        text = self._text
        made = np.empty(len(distinct), dtype=object)
        made[:] = [text[start:end] for start, end in zip(starts, ends, strict=True)]
        return made[where].reshape(wanted.shape)


def _texts_v4(wire: _WireV4) -> _Texts:
    ends = np.frombuffer(wire.text_ends, dtype=_INDEX)
    if ends.size and (ends[0] < 0 or ends[-1] != len(wire.text) or bool((np.diff(ends) < 0).any())):
        raise ValueError("the texts' ends do not match the text")
    if not ends.size and wire.text:
        raise ValueError("the texts' ends do not match the text")
    return _Texts(wire.text, ends)


def _texts_v3(wire: _WireV3) -> Any:
    texts = np.empty(len(wire.strings), dtype=object)
    texts[:] = wire.strings
    return texts


def _inflated(data: bytes | memoryview) -> bytearray:
    """``zlib.decompress(data)``, grown in place: ``zlib.decompress`` collects its output in
    blocks and joins them at the end, so a parked poll read back (20 MB inflated at 150,000
    pods) took twice its size for a moment. ``zlib.error`` when the stream is cut short."""
    inflater = zlib.decompressobj()
    out = bytearray()
    while data:
        out += inflater.decompress(data, _INFLATE_STEP)
        data = inflater.unconsumed_tail
    out += inflater.flush()
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


def _restore_packed(
    data: bytes | memoryview,
    decoder: msgspec.msgpack.Decoder[_WireV4] | msgspec.msgpack.Decoder[_WireV3],
) -> Restored:
    try:
        wire = decoder.decode(_inflated(data))
        kind = Kind(wire.kind)
        values = [
            np.frombuffer(column, dtype=_VALUE)
            for column in (wire.ts_ms, wire.window_ms, wire.cpu, wire.memory)
        ]
        count = len(values[0])
        indexes = np.frombuffer(wire.keys, dtype=_INDEX)
        pods = np.frombuffer(wire.labels, dtype=_INDEX)
        if {len(v) for v in values} != {count} or len(indexes) != 5 * count or len(pods) % 3:
            raise ValueError("columns of different lengths")
        if (indexes.size and indexes.min() < 0) or (pods.size and pods.min() < 0):
            raise IndexError("a negative index")
        texts = _texts_v4(wire) if isinstance(wire, _WireV4) else _texts_v3(wire)
        sets = np.empty(len(wire.label_sets), dtype=object)
        sets[:] = wire.label_sets
        keys = indexes.reshape(5, count)
        pod_rows = pods.reshape(3, -1)
        if (keys.size and keys.max() >= len(texts)) or (
            pod_rows.size
            and (pod_rows[:2].max() >= len(texts) or pod_rows[2].max(initial=-1) >= len(sets))
        ):
            raise IndexError("an index past its table")
    except (zlib.error, msgspec.DecodeError, ValueError) as exc:
        raise ValueError(f"not a spooled batch ({exc})") from exc
    except IndexError:
        raise ValueError("not a spooled batch (an index past its table)") from None
    return Restored(kind, texts, keys, values, pod_rows, sets, wire.batch_cluster)


def _decode_v1(data: bytes) -> Batch:
    try:
        wire = _decoder_v1.decode(zlib.decompress(data))
        kind = Kind(wire.kind)
        lengths = {len(wire.node), len(wire.namespace), len(wire.pod), len(wire.container)}
        lengths |= {len(wire.ts_ms), len(wire.window_ms), len(wire.cpu), len(wire.memory)}
        clusters = wire.cluster or [DEFAULT_CLUSTER] * len(wire.node)
        if len(lengths | {len(clusters)}) > 1:
            raise ValueError("columns of different lengths")
    except (zlib.error, msgspec.DecodeError) as exc:
        raise ValueError(f"not a spooled batch ({exc})") from exc
    keys = [
        SeriesKey(kind, node, ns, pod, container, cluster)
        for node, ns, pod, container, cluster in zip(
            wire.node, wire.namespace, wire.pod, wire.container, clusters, strict=True
        )
    ]
    samples = Samples(keys, wire.ts_ms, wire.window_ms, wire.cpu, wire.memory, restored=True)
    labels = {(ns, pod): pod_labels for ns, pod, pod_labels in wire.labels}
    return Batch(kind, samples, labels, cluster=wire.batch_cluster)


class Spool:
    """A folder of parked batches, one file each, named ``<seq>.<kind>.<samples>.batch``.

    Files are written to a temporary name and renamed, so a crash never leaves half a batch
    under a real name. A lock file keeps a second process from draining the same folder.
    """

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_SPOOL_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_file = open(directory / "lock", "a+b")
        except OSError as exc:
            raise ConfigError(
                f"the spool folder {directory} cannot be used ({exc.strerror or exc}): give a "
                "writable folder on the data volume (RECORDER_SPOOL_DIR), or an empty value "
                "to keep waiting samples in memory only"
            ) from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise ConfigError(
                f"another recorder process uses the spool folder {directory}: give each "
                "process its own (RECORDER_SPOOL_DIR)"
            ) from exc

    def close(self) -> None:
        self._lock_file.close()

    def existing(self) -> Iterator[tuple[int, Kind, int, Path, int]]:
        """(seq, kind, samples, path, size) of every parked batch left by an earlier run,
        oldest first. Leftover temporary files are removed."""
        found = []
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            match = _NAME.fullmatch(path.name)
            if match is None:
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            found.append((int(match[1]), Kind(match[2]), int(match[3]), path, size))
        yield from sorted(found, key=lambda entry: entry[0])

    def store(self, seq: int, kind: Kind, samples: int, data: bytes) -> Path | None:
        """Write one batch; ``None`` when the disk refuses (full, read-only)."""
        path = self.directory / f"{seq:020d}.{kind.value}.{samples}.batch"
        temporary = path.with_name(path.name + ".tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            log.warning("cannot spool %d samples to %s: %s", samples, self.directory, exc)
            return None
        return path

    @staticmethod
    def read(path: Path) -> bytes:
        return path.read_bytes()

    @staticmethod
    def remove(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the spooled batch %s: %s", path, exc)


@dataclass(slots=True)
class _Entry:
    seq: int
    kind: Kind
    samples: int
    batch: Batch | None = None
    data: bytes | None = None
    path: Path | None = None
    size: int = 0


@dataclass(frozen=True, slots=True)
class Pending:
    """The oldest waiting batch, handed to the writer; ``done(seq)`` once it is committed."""

    seq: int
    held: Batch | Restored
    """As it was put, or read back (a packed one made into batches a part at a time)."""

    @property
    def kind(self) -> Kind:
        return self.held.kind

    @property
    def batch(self) -> Batch:
        """The whole batch (made whole when read back packed)."""
        return self.held.whole() if isinstance(self.held, Restored) else self.held

    def parts(self, size: int) -> Iterator[Batch]:
        """The batch in parts of at most ``size`` samples when read back packed, else whole."""
        if isinstance(self.held, Restored):
            return self.held.parts(size)
        return iter((self.held,))


class WriteQueue:
    """Thread-safe FIFO of batches for the database; see the module docstring.

    ``on_drop(samples, reason)`` is called for samples given up (budget, unreadable spool).
    """

    def __init__(
        self,
        *,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        spool: Spool | None = None,
        max_raw: int = DEFAULT_MAX_RAW,
        on_drop: Callable[[int, str], None] = lambda samples, reason: None,
    ):
        self._memory_budget = memory_bytes
        self._spool = spool
        self._max_raw = max_raw
        self._on_drop = on_drop
        self._entries: deque[_Entry] = deque()
        self._memory_used = 0
        self._spool_used = 0
        self._next_seq = 0
        self._parking = False
        self._changed = threading.Condition()
        if spool is not None:
            for seq, kind, samples, path, size in spool.existing():
                self._entries.append(_Entry(seq, kind, samples, path=path, size=size))
                self._spool_used += size
                self._next_seq = seq + 1
            if self._entries:
                log.info(
                    "found %d samples in %d batches spooled by an earlier run in %s; "
                    "writing them first",
                    self.pending_samples,
                    len(self._entries),
                    spool.directory,
                )

    def close(self) -> None:
        """Release the spool folder (its files stay for the next start)."""
        if self._spool is not None:
            self._spool.close()

    # --- state ------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._changed:
            return len(self._entries)

    @property
    def pending_samples(self) -> int:
        with self._changed:
            return sum(e.samples for e in self._entries)

    @property
    def samples_by_place(self) -> tuple[int, int, int]:
        """Waiting samples (as objects, encoded in memory, in the spool folder)."""
        with self._changed:
            raw = sum(e.samples for e in self._entries if e.batch is not None)
            memory = sum(e.samples for e in self._entries if e.data is not None)
            return raw, memory, sum(e.samples for e in self._entries if e.path is not None)

    @property
    def parked_bytes(self) -> tuple[int, int]:
        """Bytes of parked batches (in memory, in the spool folder)."""
        with self._changed:
            return self._memory_used, self._spool_used

    # --- producer -----------------------------------------------------------------------

    def put(self, batch: Batch) -> int | None:
        """Queue a batch; returns its sequence number (``None`` for an empty one, which has
        nothing to write)."""
        if not batch.samples and not batch.pod_labels:
            return None
        with self._changed:
            seq = self._next_seq
            self._next_seq += 1
            entry = _Entry(seq, batch.kind, len(batch.samples), batch=batch)
            self._entries.append(entry)
            raw = sum(1 for e in self._entries if e.batch is not None)
            if self._parking or raw > self._max_raw:
                self._park(entry)
            self._changed.notify_all()
            return seq

    def park_all(self) -> None:
        """Encode and store every batch still waiting as an object (the database failed, or
        the process is stopping), and park new ones straight away until ``resume()``."""
        with self._changed:
            self._parking = True
            for entry in list(self._entries):
                if entry.batch is not None:
                    self._park(entry)
            self._changed.notify_all()

    def resume(self) -> None:
        """The database writes again: new batches wait as objects again."""
        with self._changed:
            self._parking = False

    def drop_all(self, reason: str) -> int:
        """Forget every waiting batch, counted as dropped for ``reason`` (a deposed leader's
        batches, which it may no longer write); the samples dropped."""
        with self._changed:
            entries = list(self._entries)
            self._entries.clear()
            for entry in entries:
                self._release(entry)
            self._changed.notify_all()
        samples = sum(entry.samples for entry in entries)
        if samples:
            self._on_drop(samples, reason)
        return samples

    def encoded(self) -> Iterator[tuple[int, Kind, int, bytes]]:
        """Every waiting batch, oldest first, as (seq, kind, samples, bytes as
        ``encode_batch(portable=True)`` makes them, which earlier releases read too).
        For handing them over to another replica; ``done(seq)`` once one is taken, ``drop``
        when it cannot be. A parked batch that cannot be read is dropped and counted."""
        with self._changed:
            seqs = [entry.seq for entry in self._entries]
        for seq in seqs:
            with self._changed:
                entry = next((e for e in self._entries if e.seq == seq), None)
                if entry is None:
                    continue  # written or dropped meanwhile
                batch, data, path = entry.batch, entry.data, entry.path
            try:
                if batch is not None:
                    data = encode_batch(batch, portable=True)
                else:
                    if data is None:
                        assert path is not None
                        data = Spool.read(path)
                    data = for_another_replica(data)
            except (OSError, ValueError) as exc:
                log.error(
                    "dropping %d spooled samples that cannot be read back (%s): %s",
                    entry.samples,
                    path,
                    exc,
                )
                self._remove(seq, dropped="unreadable")
                continue
            yield seq, entry.kind, entry.samples, data

    def drop(self, seq: int, reason: str) -> None:
        """Forget the batch ``seq``, counted as dropped for ``reason``."""
        self._remove(seq, dropped=reason)

    # --- consumer -----------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for something to write; whether there is."""
        with self._changed:
            if not self._entries:
                self._changed.wait(timeout)
            return bool(self._entries)

    def wait_settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no batch waits as objects (each queued batch
        written, or parked because the database fails); whether none does."""
        with self._changed:
            return self._changed.wait_for(
                lambda: all(e.batch is None for e in self._entries), timeout
            )

    def oldest_samples(self) -> int | None:
        """How many samples the oldest batch holds (read without decoding it), None when none
        waits."""
        with self._changed:
            return self._entries[0].samples if self._entries else None

    def parked_oldest(self) -> Kind | None:
        """The kind of the oldest batch when it is parked (reading it back decodes it)."""
        with self._changed:
            if not self._entries or self._entries[0].batch is not None:
                return None
            return self._entries[0].kind

    def oldest(self) -> Pending | None:
        """The oldest batch, decoded when parked. A parked batch that cannot be read back
        (a damaged file) is dropped, counted and skipped."""
        while True:
            with self._changed:
                if not self._entries:
                    return None
                entry = self._entries[0]
                if entry.batch is not None:
                    return Pending(entry.seq, entry.batch)
                data, path = entry.data, entry.path
            try:
                if data is None:
                    assert path is not None
                    data = Spool.read(path)
                return Pending(entry.seq, restore(data))
            except (OSError, ValueError) as exc:
                log.error(
                    "dropping %d spooled samples that cannot be read back (%s): %s",
                    entry.samples,
                    path or "memory",
                    exc,
                )
                self._remove(entry.seq, dropped="unreadable")

    def done(self, seq: int) -> None:
        """The batch ``seq`` is in the database: forget it."""
        self._remove(seq, dropped=None)

    # --- internals ----------------------------------------------------------------------

    def _remove(self, seq: int, *, dropped: str | None) -> None:
        with self._changed:
            for entry in self._entries:
                if entry.seq == seq:
                    self._entries.remove(entry)
                    self._release(entry)
                    self._changed.notify_all()
                    break
            else:
                return
        if dropped is not None:
            self._on_drop(entry.samples, dropped)

    def _release(self, entry: _Entry) -> None:
        if entry.path is not None:
            Spool.remove(entry.path)
            self._spool_used -= entry.size
        elif entry.data is not None:
            self._memory_used -= entry.size

    def _park(self, entry: _Entry) -> None:
        """Encode ``entry`` and keep it in the spool folder, else in memory, making room by
        dropping the oldest parked batches. Called with the lock held."""
        assert entry.batch is not None
        data = encode_batch(entry.batch)
        size = len(data)
        entry.batch = None
        spool = self._spool
        if spool is not None and size <= spool.max_bytes:
            self._make_room(size, on_disk=True)
            path = spool.store(entry.seq, entry.kind, entry.samples, data)
            if path is not None:
                entry.path, entry.size = path, size
                self._spool_used += size
                return
        if size > self._memory_budget:
            self._entries.remove(entry)
            self._dropped(entry.samples)
            return
        self._make_room(size, on_disk=False)
        entry.data, entry.size = data, size
        self._memory_used += size

    def _make_room(self, size: int, *, on_disk: bool) -> None:
        budget = self._spool.max_bytes if on_disk and self._spool else self._memory_budget
        while (self._spool_used if on_disk else self._memory_used) + size > budget:
            victim = next(
                (e for e in self._entries if (e.path if on_disk else e.data) is not None), None
            )
            if victim is None:
                return
            self._entries.remove(victim)
            self._release(victim)
            self._dropped(victim.samples)

    def _dropped(self, samples: int) -> None:
        log.error(
            "write buffer full (memory %d bytes, spool %s bytes): dropped %d samples of the "
            "oldest waiting poll",
            self._memory_budget,
            self._spool.max_bytes if self._spool else 0,
            samples,
        )
        self._on_drop(samples, "buffer_full")

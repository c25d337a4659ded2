"""The write queue and its spool folder: compact, bounded, surviving a restart."""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.buffer import (
    RESTORED_PART_SAMPLES,
    Pending,
    Restored,
    Spool,
    WriteQueue,
    _WireV3,
    _WireV4,
    decode_batch,
    encode_batch,
    for_another_replica,
    restore,
)
from recorder.domain import Batch, Kind, Sample, SeriesKey
from recorder.errors import ConfigError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
NAMES = st.text(max_size=20)


def pods_batch(count: int, ts_ms: int = 1_800_000_000_000) -> Batch:
    samples = tuple(
        Sample(SeriesKey.for_container("shop", f"web-{i}", "app"), ts_ms, 15_000, i * 1000, i)
        for i in range(count)
    )
    labels = {("shop", f"web-{i}"): {"app": "web"} for i in range(count)}
    return Batch(Kind.CONTAINER, samples, labels)


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    rows=st.lists(
        st.tuples(NAMES, NAMES, NAMES, NAMES, NAMES, INT64, INT64, INT64, INT64), max_size=20
    ),
    labels=st.dictionaries(st.tuples(NAMES, NAMES), st.dictionaries(NAMES, NAMES), max_size=3),
    cluster=NAMES,
)
def test_a_batch_comes_back_from_its_encoding_exactly(
    kind: Kind,
    rows: list[tuple[str, str, str, str, str, int, int, int, int]],
    labels: dict[tuple[str, str], dict[str, str]],
    cluster: str,
) -> None:
    samples = tuple(
        Sample(SeriesKey(kind, node, ns, pod, container, of), ts, window, cpu, memory)
        for node, ns, pod, container, of, ts, window, cpu, memory in rows
    )
    batch = Batch(kind, samples, labels, cluster=cluster)
    assert decode_batch(encode_batch(batch)) == batch
    assert decode_batch(encode_batch(batch, portable=True)) == batch


def _parked(columns: list[object]) -> bytes:
    return b"KMRB1\n" + zlib.compress(msgspec.msgpack.encode(columns))


def test_a_batch_parked_before_clusters_existed_is_of_the_default_cluster() -> None:
    labels = [["shop", "web", {"app": "web"}]]
    old = ["container", [""], ["shop"], ["web"], ["app"], [1], [2], [3], [4], labels]
    batch = decode_batch(_parked(old))
    assert batch.samples == (Sample(SeriesKey.for_container("shop", "web", "app"), 1, 2, 3, 4),)
    assert batch.samples[0].key.cluster == batch.cluster == "default"
    assert batch.pod_labels == {("shop", "web"): {"app": "web"}}
    with pytest.raises(ValueError, match="different lengths"):
        decode_batch(_parked([*old, ["prod", "prod"]]))


def test_a_batch_parked_by_the_previous_version_comes_back() -> None:
    labels = [["shop", "web", {"app": "web"}]]
    old = ["container", [""], ["shop"], ["web"], ["app"], [1], [2], [3], [4], labels]
    batch = decode_batch(_parked([*old, ["prod"], "prod"]))
    key = SeriesKey.for_container("shop", "web", "app", "prod")
    assert batch.samples == (Sample(key, 1, 2, 3, 4),)
    assert batch.cluster == "prod" and batch.samples.restored


def test_a_batch_is_parked_packed_unless_a_value_passes_64_bits() -> None:
    batch = pods_batch(3)
    assert encode_batch(batch).startswith(b"KMRB4\n")
    assert encode_batch(batch, portable=True).startswith(b"KMRB2\n")
    huge = Batch(Kind.NODE, (Sample(SeriesKey.for_node("n"), 1, 2, 2**64 - 1, 4),))
    assert encode_batch(huge).startswith(b"KMRB2\n")
    assert decode_batch(encode_batch(huge)) == huge
    assert decode_batch(for_another_replica(encode_batch(batch))) == batch
    assert for_another_replica(encode_batch(batch)).startswith(b"KMRB2\n")


def test_a_packed_batch_is_read_back_without_an_object_per_number() -> None:
    """Read back after an outage, the previous form made a Python int of every key index and
    a tuple of every pod's indexes before building the batch; the packed form does not (30,000
    samples: 17.6 -> 13.6 MB at the peak, the batch itself included; at 150,000 pods the
    worker's peak while writing three parked polls went 545-561 -> 496 MB)."""
    keys = [SeriesKey.for_container("shop", f"web-{i}", c) for i in range(15_000) for c in "ab"]
    samples = tuple(
        Sample(k, 1_800_000_000_000, 15_000, 10**6 + n, 2**20 + n) for n, k in enumerate(keys)
    )
    sets = [{"app": "web", "pod-template-hash": f"h{i}"} for i in range(1_500)]  # 10 pods each
    batch = Batch(
        Kind.CONTAINER, samples, {("shop", f"web-{i}"): sets[i // 10] for i in range(15_000)}
    )

    def peak(data: bytes) -> int:
        tracemalloc.start()
        try:
            decode_batch(data)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    packed, lists = encode_batch(batch), encode_batch(batch, portable=True)
    assert decode_batch(packed) == decode_batch(lists) == batch
    assert peak(packed) < peak(lists) * 0.85


def test_a_packed_batch_is_the_msgpack_of_its_struct_written_in_pieces() -> None:
    """The packed form is written field by field into one zlib stream: the bytes are exactly
    msgspec's encoding of the whole struct (70,000 pods: more than 65,535 texts)."""
    batch = pods_batch(70_000)
    data = encode_batch(batch)
    assert data.startswith(b"KMRB4\n")
    stream = zlib.decompress(data[len(b"KMRB4\n") :])
    wire = msgspec.msgpack.decode(stream, type=_WireV4)
    assert len(np.frombuffer(wire.text_ends, dtype="<i4")) > 65_535
    assert msgspec.msgpack.encode(wire) == stream
    assert decode_batch(data) == batch


def _as_v3(data: bytes) -> bytes:
    """A packed batch as the previous release parked it (``_WireV3``: a string per text)."""
    wire = msgspec.msgpack.decode(zlib.decompress(data[len(b"KMRB4\n") :]), type=_WireV4)
    ends = np.frombuffer(wire.text_ends, dtype="<i4").tolist()
    strings = [wire.text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    old = _WireV3(
        wire.kind,
        strings,
        wire.keys,
        wire.ts_ms,
        wire.window_ms,
        wire.cpu,
        wire.memory,
        wire.label_sets,
        wire.labels,
        wire.batch_cluster,
    )
    return b"KMRB3\n" + zlib.compress(msgspec.msgpack.encode(old))


def assert_parts_make(batch: Batch, data: bytes, size: int) -> None:
    """``data`` read back packed and made into parts of ``size`` samples gives ``batch``'s
    samples in order and each of its pods' labels."""
    restored = restore(data)
    assert isinstance(restored, Restored)
    parts = list(restored.parts(size))
    assert [s for p in parts for s in p.samples] == list(batch.samples)
    assert {k: v for p in parts for k, v in p.pod_labels.items()} == batch.pod_labels


def test_a_packed_batch_of_the_previous_release_comes_back() -> None:
    batch = pods_batch(5_000)
    batch = Batch(batch.kind, batch.samples, {**batch.pod_labels, ("ns", "gone"): {"a": "ü"}})
    old = _as_v3(encode_batch(batch))
    assert decode_batch(old) == batch
    assert_parts_make(batch, old, 1_000)


def test_a_parked_poll_read_back_and_written_in_parts_holds_less_than_half_of_it() -> None:
    """After an outage each parked poll is read back and made into batches a part at a time
    as it is written. The previous form held a string object per text from the start and
    copies of its numbers, inflated in blocks joined at the end (twice its size for a
    moment), in parts of 50,000 samples: at 150,000 pods about 80 MB at the peak, in-process.
    Now its texts are one string, its numbers views of the inflated bytes, grown in place,
    in parts of 20,000 samples: about 50 MB. Here (60,000 pods of two containers), the peak
    of the read and the walk through the parts against the batch's own size as objects:
    0.70 before, 0.45 now."""
    tracemalloc.start()
    try:
        names = [f"checkout-{i:06d}-7c9f8b6d5-x2k4p" for i in range(60_000)]
        keys = [SeriesKey.for_container("shop", n, c) for n in names for c in ("app", "proxy")]
        samples = tuple(Sample(k, 1_800_000_000_000, 15_000, n, n) for n, k in enumerate(keys))
        sets = [{"app": "checkout", "pod-template-hash": f"h{i}"} for i in range(6_000)]
        labels = {("shop", n): sets[i // 10] for i, n in enumerate(names)}
        batch = Batch(Kind.CONTAINER, samples, labels)
        itself = tracemalloc.get_traced_memory()[0]
        data = encode_batch(batch)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        restored = restore(data)
        assert isinstance(restored, Restored)
        walked = 0
        for part in restored.parts(RESTORED_PART_SAMPLES):
            first = part.samples.keys
            assert first[0].pod is first[1].pod  # one object per distinct text of a part
            walked += len(part.samples)
            del part, first
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert walked == 120_000
    assert peak < itself * 0.55
    assert_parts_make(batch, data, 7_000)


def test_encoding_a_batch_holds_much_less_than_the_batch() -> None:
    """A poll's batch is parked as it is queued while the database is down, so what encoding
    it holds adds to the poll's peak. 30,000 pods: 20.0 MB before (the whole msgpack
    encoding, a tuple per pod, a Python int per key index), 1.06x the batch's own 18.8 MB;
    12.2 MB now (at 150,000 pods: 75 -> 32 MB)."""
    tracemalloc.start()
    try:
        batch = pods_batch(30_000)
        itself = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        data = encode_batch(batch)
        holds = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert decode_batch(data) == batch
    assert holds < itself * 0.8


@pytest.mark.parametrize("portable", [False, True])
def test_read_back_each_text_and_each_label_set_is_one_object(portable: bool) -> None:
    # What a batch read back after an outage holds: the names once, not once per sample.
    shared = {"app": "web", "pod-template-hash": "7c9f8b6d5"}
    samples = [
        Sample(SeriesKey.for_container("shop", f"web-{i // 2}", f"c{i % 2}", "prod"), 1, 2, 3, 4)
        for i in range(100)
    ]
    labels = {("shop", f"web-{i}"): shared for i in range(50)}
    batch = decode_batch(
        encode_batch(Batch(Kind.CONTAINER, tuple(samples), labels), portable=portable)
    )
    keys = batch.samples.keys
    assert len({id(k.namespace) for k in keys}) == 1
    assert len({id(k.cluster) for k in keys}) == 1
    assert len({id(k.container) for k in keys}) == 2
    assert len({id(k.pod) for k in keys}) == 50
    assert keys[0].pod is keys[1].pod
    assert len({id(found) for found in batch.pod_labels.values()}) == 1
    assert next(iter(batch.pod_labels.values())) == shared
    assert batch.samples.restored


def test_encoding_is_compact() -> None:
    batch = pods_batch(10_000)
    # A Sample with its key is several hundred bytes of objects; encoded it is a few bytes.
    assert len(encode_batch(batch)) < 16 * len(batch.samples)


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"garbage",
        b"KMRB1\n" + b"\x00" * 10,
        b"KMRB2\n" + b"\x00" * 10,
        b"KMRB2\n" + zlib.compress(msgspec.msgpack.encode(["container", ["a"], [0], [0], [0]])),
        b"KMRB2\n"
        + zlib.compress(
            msgspec.msgpack.encode(
                ["container", ["a"], [0], [0], [5], [0], [0], [1], [2], [3], [4], [], [], "c"]
            )
        ),
    ],
)
def test_bytes_that_are_not_a_batch_are_a_value_error(damage: bytes) -> None:
    with pytest.raises(ValueError):
        decode_batch(damage)


def _packed(keys: list[int], labels: list[int], values: int = 1) -> bytes:
    ints = [np.array(keys, dtype="<i4").tobytes(), np.array(labels, dtype="<i4").tobytes()]
    value = np.arange(values, dtype="<i8").tobytes()
    wire = ["node", ["", "a"], ints[0], value, value, value, value, [{}], ints[1], "c"]
    return b"KMRB3\n" + zlib.compress(msgspec.msgpack.encode(wire))


@pytest.mark.parametrize(
    "damage",
    [
        b"KMRB3\n" + b"\x00" * 10,
        _packed([0, 1, 0, 0, 0, 0], [1, 1, 0]),  # six indexes for one sample
        _packed([0, 1, 0, 0, 0], [1, 1]),  # a pod's indexes cut short
        _packed([0, 2, 0, 0, 0], [1, 1, 0]),  # past the texts
        _packed([0, -1, 0, 0, 0], [1, 1, 0]),  # negative
        _packed([0, 1, 0, 0, 0], [1, 1, 1]),  # past the label sets
        _packed([0, 1, 0, 0, 0], [1, 1, -1]),
        _packed([0, 1, 0, 0, 0], [1, 1, 0], values=2),
    ],
)
def test_packed_bytes_that_are_not_a_batch_are_a_value_error(damage: bytes) -> None:
    assert decode_batch(_packed([0, 1, 0, 0, 0], [1, 1, 0])).samples[0].key.namespace == "a"
    with pytest.raises(ValueError):
        decode_batch(damage)

    with pytest.raises(ValueError):
        decode_batch(damage)


def test_a_healthy_queue_hands_batches_over_as_they_are() -> None:
    queue = WriteQueue()
    batch = pods_batch(3)
    seq = queue.put(batch)
    pending = queue.oldest()
    assert pending is not None and pending.seq == seq and pending.batch is batch
    assert queue.parked_bytes == (0, 0)
    queue.done(seq)
    assert queue.oldest() is None and len(queue) == 0


def test_parked_batches_survive_a_restart_through_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    queue = WriteQueue(spool=spool)
    first, second = pods_batch(5, 1_000), pods_batch(7, 2_000)
    queue.put(first)
    queue.put(second)
    queue.park_all()  # the database failed
    memory, on_disk = queue.parked_bytes
    assert memory == 0 and on_disk > 0
    spool.close()  # the process ends (kill -9 leaves the same files)

    again = WriteQueue(spool=Spool(tmp_path / "spool"))
    assert again.pending_samples == 12
    oldest = again.oldest()
    assert oldest is not None and oldest.batch == first
    again.done(oldest.seq)
    following = again.oldest()
    assert following is not None and following.batch == second
    again.done(following.seq)
    assert list((tmp_path / "spool").glob("*.batch")) == []
    # New batches get numbers after the recovered ones: order is kept across restarts.
    new_seq = again.put(pods_batch(1))
    assert new_seq is not None and new_seq > following.seq
    again.close()


def test_a_second_process_cannot_use_the_same_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    try:
        with pytest.raises(ConfigError, match="another recorder process"):
            Spool(tmp_path / "spool")
    finally:
        first.close()
    Spool(tmp_path / "spool").close()  # free again once the first one is closed


def test_an_unusable_spool_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="RECORDER_SPOOL_DIR"):
        Spool(blocker / "spool")


def test_over_budget_the_oldest_parked_batches_are_dropped_and_counted() -> None:
    dropped: list[tuple[int, str]] = []
    one = len(encode_batch(pods_batch(100)))
    queue = WriteQueue(memory_bytes=3 * one + 10, on_drop=lambda n, why: dropped.append((n, why)))
    queue.park_all()
    seqs = [queue.put(pods_batch(100, ts)) for ts in range(1, 6)]
    assert queue.put(Batch(Kind.NODE)) is None  # nothing to write
    assert dropped == [(100, "buffer_full"), (100, "buffer_full")]
    assert queue.pending_samples == 300
    oldest = queue.oldest()
    assert oldest is not None and oldest.seq == seqs[2]  # the newest are kept
    assert queue.parked_bytes[0] <= 3 * one + 10


def test_a_full_disk_parks_in_memory_instead(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=10)  # nothing fits on "disk"
    queue = WriteQueue(spool=spool)
    queue.put(pods_batch(50))
    queue.park_all()
    memory, on_disk = queue.parked_bytes
    assert memory > 0 and on_disk == 0
    assert queue.samples_by_place == (0, 50, 0)
    queue.close()


def test_a_damaged_spool_file_is_dropped_counted_and_skipped(tmp_path: Path) -> None:
    dropped: list[tuple[int, str]] = []
    spool = Spool(tmp_path / "spool")
    queue = WriteQueue(spool=spool)
    queue.put(pods_batch(4, 1_000))
    queue.put(pods_batch(6, 2_000))
    queue.park_all()
    spool.close()
    files = sorted((tmp_path / "spool").glob("*.batch"))
    files[0].write_bytes(b"KMRB1\nnot zlib")
    (tmp_path / "spool" / "00000000000000000009.container.3.batch.tmp").write_bytes(b"half")

    again = WriteQueue(
        spool=Spool(tmp_path / "spool"), on_drop=lambda n, why: dropped.append((n, why))
    )
    pending = again.oldest()
    assert pending is not None and pending.batch == pods_batch(6, 2_000)
    assert dropped == [(4, "unreadable")]
    assert not list((tmp_path / "spool").glob("*.tmp"))
    again.close()


def test_many_healthy_batches_waiting_are_parked_beyond_max_raw() -> None:
    queue = WriteQueue(max_raw=2)
    for ts in range(4):
        queue.put(pods_batch(10, ts))
    raw, memory, on_disk = queue.samples_by_place
    assert (raw, memory, on_disk) == (20, 20, 0)


def test_every_waiting_batch_comes_out_encoded_for_a_handover(tmp_path: Path) -> None:
    dropped: list[tuple[int, str]] = []
    queue = WriteQueue(
        spool=Spool(tmp_path), max_raw=1, on_drop=lambda n, why: dropped.append((n, why))
    )
    batches = [pods_batch(n, ts_ms=1_800_000_000_000 + n) for n in (1, 2, 3, 4)]
    seqs = [queue.put(batch) for batch in batches]
    queue.park_all()
    queue.resume()
    queue.put(pods_batch(5))  # waits as it is
    damaged = sorted(tmp_path.glob("*.batch"))[1]  # the second batch's file
    damaged.unlink()
    out = list(queue.encoded())
    assert [seq for seq, *_ in out] == [seqs[0], seqs[2], seqs[3], seqs[3] + 1]
    assert [decode_batch(data) for *_, data in out] == [*batches[:1], *batches[2:], pods_batch(5)]
    # Parked or not, in the form every release since the handover reads (not KMRB3).
    assert all(data.startswith(b"KMRB2\n") for *_, data in out)
    assert [(kind, samples) for _, kind, samples, _ in out] == [
        (Kind.CONTAINER, n) for n in (1, 3, 4, 5)
    ]
    assert dropped == [(2, "unreadable")]
    assert len(queue) == 4  # until each is taken
    for seq, *_ in out[:3]:
        queue.done(seq)
    queue.drop(out[3][0], "deposed")
    assert len(queue) == 0 and not list(tmp_path.glob("*.batch"))
    assert dropped == [(2, "unreadable"), (5, "deposed")]
    queue.close()


@settings(max_examples=100, deadline=None)
@given(
    pods=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from("pqrst"), st.integers(0, 3)),
        max_size=12,
    ),
    orphans=st.lists(st.tuples(st.sampled_from(["a", "c"]), st.sampled_from("uvw")), max_size=3),
    size=st.integers(1, 6),
)
def test_a_packed_batch_read_back_in_parts_is_the_whole_batch_in_order(
    pods: list[tuple[str, str, int]], orphans: list[tuple[str, str]], size: int
) -> None:
    """Each part holds the next ``size`` samples and the labels of the pods among them (a pod
    whose containers straddle two parts: in both), the labels of pods without samples go with
    the first part, and nothing else."""
    samples = [
        Sample(SeriesKey.for_container(ns, pod, f"c{c}"), 1_800_000_000_000 + n, 15_000, n, 2 * n)
        for n, (ns, pod, containers) in enumerate(pods)
        for c in range(containers)
    ]
    labels = {(k.namespace, k.pod): {"app": k.pod} for k in (s.key for s in samples)}
    labels.update({ref: {"orphan": ref[1]} for ref in orphans if ref not in labels})
    batch = Batch(Kind.CONTAINER, tuple(samples), labels, cluster="east")
    pending = restored_pending(encode_batch(batch))
    parts = list(pending.parts(size))
    assert len(parts) == max(1, -(-len(samples) // size))
    assert [s for part in parts for s in part.samples] == samples
    for n, part in enumerate(parts):
        assert len(part.samples) <= size and part.cluster == "east" and part.kind is Kind.CONTAINER
        own = {(s.key.namespace, s.key.pod) for s in part.samples}
        if n == 0:
            own |= {
                ref
                for ref in labels
                if ref not in {(k.namespace, k.pod) for k in batch.samples.keys}
            }
        assert dict(part.pod_labels) == {ref: labels[ref] for ref in own}
    assert pending.batch == batch


def restored_pending(data: bytes) -> Pending:
    """``data`` as the write queue hands a parked batch to the writer."""
    pending = Pending(0, restore(data))
    assert isinstance(pending.held, Restored)
    return pending


def test_a_parked_batch_read_back_in_parts_holds_a_part_at_a_time() -> None:
    """The writer writes a batch read back packed in parts (``RESTORED_PART_SAMPLES``): made
    whole, 30,000 samples' keys, values and labels are all Python objects at once."""
    batch = pods_batch(30_000)
    data = encode_batch(batch)

    def peak(read: Callable[[], None]) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    pending = restored_pending(data)

    def in_parts() -> None:
        for part in pending.parts(3_000):
            assert len(part.samples) == 3_000

    whole, parts = peak(lambda: pending.batch and None), peak(in_parts)
    assert parts < whole * 0.5

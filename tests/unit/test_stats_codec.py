"""Tests for the chunk payload codec.

Run as a module (``python -m tests.unit.test_codec``) to print the size and speed figures quoted
in ``recorder/store/codec.py``.
"""

from __future__ import annotations

import random
import timeit
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.errors import DecodeError
from recorder.stats.codec import (
    FORMAT_VERSION,
    MAX_SAMPLES,
    ChunkSamples,
    decode_arrays,
    decode_samples,
    encode_samples,
)

Columns = tuple[list[int], list[int], list[int], list[int]]

PERIOD_MS = 30_000
KIB = 1024


def realistic_series(rng: random.Random, count: int = 120, *, irregular: bool = False) -> Columns:
    """One synthetic hour of one container: the data the size figures are measured on.

    CPU is Gaussian with 10 % relative noise around a level drawn log-uniformly from 1e6 to 1e9
    nanocores; memory is a multiple of 4 KiB that moves by up to 64 pages in 20 % of the polls;
    1 % of the polls are missed. ``irregular`` jitters every step by up to ±300 ms and draws
    each window from 9.5 s to 11.5 s; otherwise step and window are exactly 30 s.
    """
    timestamp = 1_700_000_000_000 + rng.randrange(3_600_000)
    level = 10 ** rng.uniform(6, 9)
    memory = rng.randrange(2**20, 2**32) // (4 * KIB) * (4 * KIB)
    timestamps, windows, cpu, memories = [], [], [], []
    for _ in range(count):
        timestamps.append(timestamp)
        windows.append(rng.randint(9_500, 11_500) if irregular else PERIOD_MS)
        cpu.append(max(0, round(rng.gauss(level, 0.1 * level))))
        if rng.random() < 0.2:
            memory += rng.randint(-64, 64) * 4 * KIB
        memories.append(memory)
        step = PERIOD_MS + (rng.randint(-300, 300) if irregular else 0)
        if rng.random() < 0.01:
            step += PERIOD_MS * rng.randint(1, 4)
        timestamp += step
    return timestamps, windows, cpu, memories


def bytes_per_pair(series: list[Columns]) -> float:
    size = sum(len(encode_samples(*columns)) for columns in series)
    return size / sum(len(columns[0]) for columns in series)


def assert_round_trip(columns: Columns) -> bytes:
    payload = encode_samples(*columns)
    assert decode_samples(payload) == ChunkSamples(*columns)
    return payload


# --- round trips -------------------------------------------------------------------------------

values = st.one_of(
    st.integers(min_value=0, max_value=2**50),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**64)]),
)


@st.composite
def sample_columns(draw: st.DrawFn) -> Columns:
    count = draw(st.integers(min_value=0, max_value=40))
    start = draw(st.integers(min_value=-(2**45), max_value=2**45))
    steps = draw(
        st.lists(
            st.one_of(st.just(PERIOD_MS), st.integers(min_value=1, max_value=2**40)),
            min_size=count,
            max_size=count,
        )
    )
    timestamps = []
    for step in steps:
        timestamps.append(start)
        start += step
    other = st.lists(values, min_size=count, max_size=count)
    return timestamps, draw(other), draw(other), draw(other)


@given(sample_columns())
@settings(deadline=None)
def test_round_trip_of_arbitrary_series(columns: Columns) -> None:
    assert_round_trip(columns)


@pytest.mark.parametrize("irregular", [False, True])
def test_round_trip_of_realistic_series(irregular: bool) -> None:
    rng = random.Random(7)
    for _ in range(20):
        assert_round_trip(realistic_series(rng, irregular=irregular))


def test_empty_series() -> None:
    payload = assert_round_trip(([], [], [], []))
    assert len(decode_samples(payload)) == 0


def test_single_and_pair_of_samples() -> None:
    assert_round_trip(([1_700_000_000_000], [30_000], [0], [2**40]))
    assert_round_trip(([5, 6], [0, 0], [0, 0], [0, 0]))


def test_values_wider_than_a_machine_word() -> None:
    big = 2**200
    assert_round_trip(([1, 2, 3], [big, -big, 0], [big, big + 1, big - 7], [0, 2**64, 2**65]))
    edge = 2**8190 - 1
    assert_round_trip(([1, 2], [edge, -edge], [-edge, edge], [edge, edge]))


def test_values_beyond_the_supported_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="within"):
        encode_samples([1], [2**8190], [0], [0])


def test_constant_series_compresses_to_almost_nothing() -> None:
    count = 120
    timestamps = [1_700_000_000_000 + PERIOD_MS * i for i in range(count)]
    payload = assert_round_trip((timestamps, [PERIOD_MS] * count, [0] * count, [2**30] * count))
    assert len(payload) < 40


# --- invalid input -----------------------------------------------------------------------------


def test_columns_of_different_length_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        encode_samples([1, 2], [1, 2], [1], [1, 2])


@pytest.mark.parametrize("timestamps", [[2, 1], [1, 1], [1, 3, 3], [5, 6, 4]])
def test_timestamps_must_strictly_increase(timestamps: list[int]) -> None:
    zeros = [0] * len(timestamps)
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_samples(timestamps, zeros, zeros, zeros)


def test_too_many_samples_are_rejected() -> None:
    count = MAX_SAMPLES + 1
    zeros = [0] * count
    with pytest.raises(ValueError, match="at most"):
        encode_samples(range(count), zeros, zeros, zeros)


# --- damaged payloads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_payload() -> tuple[bytes, ChunkSamples]:
    columns = realistic_series(random.Random(3), count=30)
    return encode_samples(*columns), ChunkSamples(*columns)


def test_every_truncation_is_rejected(sample_payload: tuple[bytes, ChunkSamples]) -> None:
    payload, _ = sample_payload
    for end in range(len(payload)):
        with pytest.raises(DecodeError):
            decode_samples(payload[:end])


def test_flipped_bits_never_yield_different_samples(
    sample_payload: tuple[bytes, ChunkSamples],
) -> None:
    payload, original = sample_payload
    for position in range(len(payload)):
        for bit in (0x01, 0x10, 0x80):
            damaged = bytearray(payload)
            damaged[position] ^= bit
            try:
                decoded = decode_samples(bytes(damaged))
            except DecodeError:
                continue
            # Only bits deflate ignores (padding of the last block) may go unnoticed.
            assert decoded == original


def test_trailing_bytes_are_rejected(sample_payload: tuple[bytes, ChunkSamples]) -> None:
    payload, _ = sample_payload
    with pytest.raises(DecodeError, match="trailing"):
        decode_samples(payload + b"\x00")


def test_unknown_version_is_rejected(sample_payload: tuple[bytes, ChunkSamples]) -> None:
    payload, _ = sample_payload
    with pytest.raises(DecodeError, match="version"):
        decode_samples(bytes([FORMAT_VERSION + 1]) + payload[1:])
    with pytest.raises(DecodeError, match="empty"):
        decode_samples(b"")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wrap(body: bytes) -> bytes:
    """A payload whose checksum is right, so only the structural checks can catch ``body``."""
    return bytes([FORMAT_VERSION]) + zlib.compress(body)


def _frame_column(offsets: list[int]) -> bytes:
    """A frame-of-reference column with base 0 and one byte per value."""
    return b"\x00" + _varint(0) + _varint(1) + bytes(offsets)


def test_well_formed_hand_built_body_decodes() -> None:
    body = _varint(2) + b"".join(_frame_column([i, i + 1]) for i in range(4))
    assert decode_samples(_wrap(body)) == ChunkSamples([0, 1], [1, 2], [2, 3], [3, 4])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "ends early"),
        (_varint(2) + _frame_column([0, 1]), "ends early"),
        (_varint(2) + _frame_column([0, 1]) * 4 + b"\x00", "trailing"),
        (_varint(2) + _frame_column([1, 1]) * 4, "strictly increasing"),
        (_varint(2) + _frame_column([1, 0]) * 4, "strictly increasing"),
        (_varint(2) + b"\x07" + _frame_column([0, 1])[1:] * 4, "column mode"),
        (_varint(2) + b"\x00\x00" + _varint(5000) + b"\x00" * 100, "wide"),
        (_varint(MAX_SAMPLES + 1), "claims"),
        (b"\xff" * 2000, "overlong"),
    ],
)
def test_malformed_bodies_are_rejected(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_samples(_wrap(body))


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_decode_error(junk: bytes) -> None:
    for payload in (junk, bytes([FORMAT_VERSION]) + junk, _wrap(junk)):
        try:
            decode_samples(payload)
        except DecodeError:
            pass


# --- size --------------------------------------------------------------------------------------


def test_regular_series_fit_in_six_bytes_per_pair() -> None:
    # 6.0 B/pair is VictoriaMetrics' figure on this data shape (design.md section 5); the
    # measured value is about 4.7.
    rng = random.Random(11)
    assert bytes_per_pair([realistic_series(rng) for _ in range(200)]) < 6.0


def test_irregular_series_stay_near_their_entropy() -> None:
    # The jittered steps and random windows alone carry about 3 bytes per sample of entropy on
    # top of the regular case; the measured value is about 8.0.
    rng = random.Random(11)
    assert bytes_per_pair([realistic_series(rng, irregular=True) for _ in range(200)]) < 9.0


def _benchmark() -> None:
    """Print bytes per pair over 2,000 series and the best-of-5 speed for one series."""
    for irregular in (False, True):
        rng = random.Random(1)
        series = [realistic_series(rng, irregular=irregular) for _ in range(2000)]
        one = series[0]
        payload = encode_samples(*one)
        rounds = 2000
        encode_s = min(
            timeit.repeat(lambda: encode_samples(*one), number=rounds, repeat=5)  # noqa: B023
        )
        decode_s = min(
            timeit.repeat(lambda: decode_samples(payload), number=rounds, repeat=5)  # noqa: B023
        )
        per_series_us = (encode_s + decode_s) / rounds * 1e6
        print(
            f"{'irregular' if irregular else 'regular':9}: "
            f"{bytes_per_pair(series):.2f} bytes/pair; per {len(one[0])}-sample series "
            f"encode {encode_s / rounds * 1e6:.0f} us, decode {decode_s / rounds * 1e6:.0f} us, "
            f"encode+decode {len(one[0]) / per_series_us * 1e6:,.0f} samples/s"
        )


if __name__ == "__main__":
    _benchmark()


# --- many payloads at once ---------------------------------------------------------------------


def joined(decoded: list[ChunkSamples]) -> tuple[list[int], ...]:
    return tuple(
        [v for samples in decoded for v in getattr(samples, name)]
        for name in ("timestamps_ms", "windows_ms", "cpu_nanocores", "memory_bytes")
    )


@given(st.lists(sample_columns(), max_size=6))
@settings(deadline=None)
def test_decode_arrays_equals_decoding_one_by_one(series: list[Columns]) -> None:
    """Empty payloads, negative values and deltas, values past 2**53 up to 2**63 - 1 decode
    exactly; only where a value may not fit in 64 bits does the batch decline."""
    payloads = [encode_samples(*columns) for columns in series]
    one_by_one = [decode_samples(payload) for payload in payloads]
    got = decode_arrays(payloads)
    if got is None:
        assert any(abs(v) >= 2**55 for columns in series for column in columns for v in column)
        return
    assert got.counts == [len(samples) for samples in one_by_one]
    assert (
        got.timestamps_ms.tolist(),
        got.windows_ms.tolist(),
        got.cpu_nanocores.tolist(),
        got.memory_bytes.tolist(),
    ) == joined(one_by_one)


def test_decode_arrays_of_the_largest_exact_values() -> None:
    top = 2**63 - 1
    series = [
        ([0, 1, 2], [top, top - 1, top], [-(2**63), 0, top], [2**53 + 1, 2**53, 2**53 + 3]),
        ([], [], [], []),
        ([5], [top], [-1], [0]),
    ]
    payloads = [encode_samples(*columns) for columns in series]
    got = decode_arrays(payloads)
    if got is not None:  # wide spans may decline: then one by one is the answer
        assert got.cpu_nanocores.tolist() == [v for c in series for v in c[2]]
        assert got.windows_ms.tolist() == [v for c in series for v in c[1]]
    assert decode_arrays([encode_samples([1, 2], [0, 0], [2**63, 0], [0, 0])]) is None
    assert decode_arrays([]) is not None


def test_decode_arrays_raises_what_one_by_one_meets_first(
    sample_payload: tuple[bytes, ChunkSamples],
) -> None:
    payload, _ = sample_payload
    damaged = [payload[:end] for end in range(0, len(payload), 7)]
    damaged += [payload + b"\x00", bytes([FORMAT_VERSION + 1]) + payload[1:]]
    for bad in damaged:
        with pytest.raises(DecodeError) as expected:
            decode_samples(bad)
        with pytest.raises(DecodeError) as got:
            decode_arrays([payload, bad, payload])
        assert str(got.value) == str(expected.value)

"""Tests for the relative-error quantile sketch."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.errors import DecodeError
from recorder.stats.sketch import (
    DEFAULT_MAX_BUCKETS,
    FORMAT_VERSION,
    MAX_VALUE,
    RELATIVE_ACCURACY,
    QuantileSketch,
    exact_quantile,
    quantile_rank,
)

# Rounding in log/exp may add about 1e-13 relative error on top of alpha (see the module).
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)
QUANTILES = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)


def assert_accurate(sketch: QuantileSketch, values: list[int], q: float) -> None:
    estimate = sketch.quantile(q)
    exact = exact_quantile(values, q)
    if exact == 0:
        assert estimate == 0.0, (q, estimate)
    else:
        assert abs(estimate - exact) <= TOLERANCE * exact, (q, estimate, exact)


value_lists = st.lists(
    st.one_of(
        st.just(0),
        st.integers(min_value=1, max_value=1000),
        st.integers(min_value=10**6, max_value=10**9),
        st.integers(min_value=0, max_value=2**50),
    ),
    min_size=1,
    max_size=200,
)
quantiles = st.floats(min_value=0.0, max_value=1.0)


# --- the reference ------------------------------------------------------------------------------


def test_exact_quantile_is_the_lower_nearest_rank() -> None:
    values = [40, 10, 30, 20]
    assert exact_quantile(values, 0.0) == 10.0
    assert exact_quantile(values, 0.5) == 20.0  # rank floor(0.5 * 3) = 1
    assert exact_quantile(values, 0.66) == 20.0  # rank floor(1.98) = 1
    assert exact_quantile(values, 0.67) == 30.0  # rank floor(2.01) = 2
    assert exact_quantile(values, 1.0) == 40.0
    assert exact_quantile([7], 0.3) == 7.0


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan, math.inf])
def test_quantile_outside_zero_to_one_is_rejected(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        quantile_rank(q, 10)
    with pytest.raises(ValueError, match="between 0 and 1"):
        QuantileSketch.of([1, 2, 3]).quantile(q)


def test_quantile_of_nothing_is_rejected() -> None:
    with pytest.raises(ValueError, match="no values"):
        exact_quantile([], 0.5)
    with pytest.raises(ValueError, match="no values"):
        QuantileSketch().quantile(0.5)


# --- accuracy -----------------------------------------------------------------------------------


@given(value_lists, quantiles)
@settings(deadline=None)
def test_every_quantile_is_within_alpha_of_the_exact_one(values: list[int], q: float) -> None:
    sketch = QuantileSketch.of(values)
    assert sketch.count == len(values)
    for each in [*QUANTILES, q]:
        assert_accurate(sketch, values, each)


def test_every_rank_of_realistic_cpu_and_memory_is_within_alpha() -> None:
    rng = random.Random(5)
    cpu = [max(0, round(rng.gauss(2e8, 6e7))) for _ in range(500)] + [0] * 40
    memory = [rng.randrange(2**20, 2**34) // 1024 * 1024 for _ in range(500)]
    for values in (cpu, memory):
        sketch = QuantileSketch.of(values)
        for rank in range(len(values)):
            assert_accurate(sketch, values, rank / (len(values) - 1))


def test_zeros_are_exact_and_extremes_are_exact() -> None:
    values = [0] * 50 + [999_999, 1_000_000, 1_000_001] * 10
    sketch = QuantileSketch.of(values)
    assert sketch.zero_count == 50
    assert sketch.quantile(0.0) == 0.0
    assert sketch.quantile(49 / 79) == 0.0
    assert sketch.quantile(50 / 79) != 0.0
    assert sketch.quantile(1.0) == 1_000_001.0
    assert QuantileSketch.of([0, 0, 0]).quantile(0.5) == 0.0
    assert QuantileSketch.of([123_456_789]).quantile(0.5) == 123_456_789.0


def test_add_one_by_one_equals_add_many() -> None:
    values = [0, 5, 10**9, 3, 3, 2**40]
    one_by_one = QuantileSketch()
    for value in values:
        one_by_one.add(value)
    assert one_by_one == QuantileSketch.of(values)


def test_negative_values_are_rejected_without_partial_effect() -> None:
    sketch = QuantileSketch.of([1, 2])
    with pytest.raises(ValueError, match="negative"):
        sketch.add_many([5, -1, 7])
    with pytest.raises(ValueError, match="negative"):
        sketch.add(-3)
    assert sketch == QuantileSketch.of([1, 2])


def test_largest_value_is_supported_and_larger_ones_rejected() -> None:
    sketch = QuantileSketch.of([1, MAX_VALUE, MAX_VALUE])
    assert math.isfinite(sketch.quantile(0.5))
    assert_accurate(sketch, [1, MAX_VALUE, MAX_VALUE], 0.5)
    with pytest.raises(ValueError, match="2\\*\\*1023"):
        sketch.add(MAX_VALUE + 1)


# --- merging ------------------------------------------------------------------------------------


@given(value_lists, value_lists)
@settings(deadline=None)
def test_merge_equals_the_sketch_of_the_concatenation(left: list[int], right: list[int]) -> None:
    merged = QuantileSketch.of(left)
    merged.merge(QuantileSketch.of(right))
    whole = QuantileSketch.of(left + right)
    assert merged == whole
    assert merged.to_bytes() == whole.to_bytes()
    for q in QUANTILES:
        assert merged.quantile(q) == whole.quantile(q)


def test_merging_empty_sketches() -> None:
    sketch = QuantileSketch()
    sketch.merge(QuantileSketch())
    assert sketch.count == 0
    assert QuantileSketch().min is None
    sketch.merge(QuantileSketch.of([4, 0]))
    assert (sketch.count, sketch.zero_count, sketch.min, sketch.max) == (2, 1, 0, 4)
    sketch.merge(QuantileSketch())
    assert sketch == QuantileSketch.of([0, 4])


# --- bounded size -------------------------------------------------------------------------------


def test_default_cap_never_collapses_values_from_1_to_2_pow_59() -> None:
    # One value per bucket from 1 to 2**59: every bucket the default cap has room for.
    values = sorted({math.ceil(GAMMA**i) for i in range(2100) if GAMMA**i <= 2**59} | {2**59})
    sketch = QuantileSketch.of(values)
    assert sketch.bucket_count <= DEFAULT_MAX_BUCKETS
    for rank in range(0, len(values), 7):
        assert_accurate(sketch, values, rank / (len(values) - 1))


def test_collapsing_folds_the_lowest_buckets_upward() -> None:
    values = [round(1.5**k) for k in range(1, 80)]
    sketch = QuantileSketch.of(values, max_buckets=8)
    assert sketch.bucket_count == 8
    assert sketch.count == len(values)
    lowest_kept = sorted(values)[-8]
    for q in QUANTILES:
        exact = exact_quantile(values, q)
        estimate = sketch.quantile(q)
        if exact >= lowest_kept:
            assert_accurate(sketch, values, q)
        else:  # folded: too high, but not above the lowest kept bucket
            assert exact <= estimate <= lowest_kept * (1 + TOLERANCE)
    assert sketch.quantile(0.0) == values[0]


def test_collapsing_applies_to_merge_and_decode() -> None:
    wide = QuantileSketch.of([10**k for k in range(1, 19)])
    assert wide.bucket_count == 18
    small = QuantileSketch(max_buckets=4)
    small.merge(wide)
    assert small.bucket_count == 4
    assert QuantileSketch.from_bytes(wide.to_bytes(), max_buckets=4) == small
    assert small.quantile(1.0) == 10.0**18


@given(st.lists(value_lists, min_size=1, max_size=8), st.randoms(use_true_random=False))
@settings(deadline=None)
def test_merging_in_any_grouping_and_order_is_the_same_even_when_folding(
    parts: list[list[int]], rng: random.Random
) -> None:
    """Namespace rollups merge series' sketches per namespace and then across days: the same
    sketch as merging every one in turn, also when buckets are folded."""
    sketches = [QuantileSketch.of(values, max_buckets=6) for values in parts]
    one_by_one = QuantileSketch(max_buckets=6)
    for sketch in sketches:
        one_by_one.merge(sketch)
    shuffled = sketches[:]
    rng.shuffle(shuffled)
    cut = rng.randrange(len(shuffled) + 1)
    grouped = []
    for group in (shuffled[:cut], shuffled[cut:]):
        merged = QuantileSketch(max_buckets=6)
        for sketch in group:
            merged.merge(sketch)
        grouped.append(merged)
    in_groups = QuantileSketch(max_buckets=6)
    for merged in reversed(grouped):
        in_groups.merge(merged)
    assert in_groups == one_by_one
    assert in_groups.to_bytes() == one_by_one.to_bytes()


def test_max_buckets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        QuantileSketch(max_buckets=0)


# --- serialization ------------------------------------------------------------------------------


@given(st.one_of(st.just([]), value_lists))
def test_serialization_round_trip(values: list[int]) -> None:
    sketch = QuantileSketch.of(values)
    data = sketch.to_bytes()
    assert data[0] == FORMAT_VERSION
    copy = QuantileSketch.from_bytes(data)
    assert copy == sketch
    assert copy.to_bytes() == data
    if values:
        assert [copy.quantile(q) for q in QUANTILES] == [sketch.quantile(q) for q in QUANTILES]


def test_an_hour_of_cpu_serializes_small() -> None:
    rng = random.Random(9)
    sizes = []
    for _ in range(50):
        level = 10 ** rng.uniform(6, 9)
        values = [max(0, round(rng.gauss(level, 0.1 * level))) for _ in range(120)]
        sizes.append(len(QuantileSketch.of(values).to_bytes()))
    # Measured: 59 bytes on average (about 23 buckets of 2 bytes, plus min and max).
    assert sum(sizes) / len(sizes) < 80


@pytest.fixture(scope="module")
def sample_bytes() -> bytes:
    return QuantileSketch.of([0, 0, 1, 50, 7_000, 10**8, 10**8 + 5, 2**40]).to_bytes()


def test_every_truncation_is_rejected(sample_bytes: bytes) -> None:
    for end in range(len(sample_bytes)):
        with pytest.raises(DecodeError):
            QuantileSketch.from_bytes(sample_bytes[:end])


def test_trailing_bytes_and_unknown_versions_are_rejected(sample_bytes: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        QuantileSketch.from_bytes(sample_bytes + b"\x00")
    with pytest.raises(DecodeError, match="version"):
        QuantileSketch.from_bytes(bytes([FORMAT_VERSION + 1]) + sample_bytes[1:])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x01\x05\x00", "empty bucket"),
        (b"\x00\x01\x05\x01\x0a\x00", "maximum"),  # max 10 is not in bucket 5
        (b"\x00\x01\x00\x01\x01\x00", "ok"),  # the value 1
        (b"\x01\x00\x00\x00", "ok"),  # one zero
        (b"\x01\x00\x01\x00", "minimum"),  # zeros but a positive minimum
        (b"\x00\x00", "ok"),  # empty
        (b"\x01\x00\x00\x05", "maximum"),  # only zeros but a positive maximum
        (b"\x00\x01\x00\x01\x00\x00", "minimum"),  # no zeros but a zero minimum
        (b"\x00\x02\x00\x01\x22\x01\x02\x00", "minimum"),  # buckets of 1 and 2, but min 2
        (b"\x00\x01" + b"\xff" * 200, "overlong"),
    ],
)
def test_inconsistent_sketches_are_rejected(body: bytes, message: str) -> None:
    data = bytes([FORMAT_VERSION]) + body
    if message == "ok":
        assert QuantileSketch.from_bytes(data).to_bytes() == data
    else:
        with pytest.raises(DecodeError, match=message):
            QuantileSketch.from_bytes(data)


@given(st.binary(max_size=40))
def test_arbitrary_bytes_raise_only_decode_error(junk: bytes) -> None:
    try:
        sketch = QuantileSketch.from_bytes(bytes([FORMAT_VERSION]) + junk)
    except DecodeError:
        return
    if sketch.count:
        for q in QUANTILES:
            assert math.isfinite(sketch.quantile(q))


def test_repr_names_the_counts() -> None:
    assert repr(QuantileSketch.of([0, 3])) == (
        "QuantileSketch(count=2, zero_count=1, buckets=1, min=0, max=3)"
    )


@given(
    st.lists(st.integers(0, 2**40), max_size=200),
    st.lists(st.integers(0, 2**40), max_size=200),
)
def test_merge_bytes_equals_merging_the_decoded_sketch(a: list[int], b: list[int]) -> None:
    merged = QuantileSketch.of(a)
    merged.merge(QuantileSketch.from_bytes(QuantileSketch.of(b).to_bytes()))
    direct = QuantileSketch.of(a)
    direct.merge_bytes(QuantileSketch.of(b).to_bytes())
    assert direct == merged
    assert direct.to_bytes() == merged.to_bytes()


def test_merge_bytes_of_a_damaged_sketch_changes_nothing() -> None:
    sketch = QuantileSketch.of([1, 2, 3])
    before = sketch.to_bytes()
    with pytest.raises(DecodeError):
        sketch.merge_bytes(QuantileSketch.of([5, 6]).to_bytes()[:-1])
    assert sketch.to_bytes() == before

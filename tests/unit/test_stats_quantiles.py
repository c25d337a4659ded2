"""Quantiles of many merged sketches at once equal the scalar merge, one sketch at a time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.errors import DecodeError
from recorder.stats.quantiles import (
    merged_quantiles,
    merged_sketches,
    scalar_merge,
    scalar_quantile,
)
from recorder.stats.sketch import MAX_VALUE, QuantileSketch

QS = (0.0, 0.5, 0.95, 0.99, 1.0)

sketch_values = st.lists(
    st.one_of(
        st.integers(0, 10),
        st.integers(10**6, 10**9),
        st.integers(2**52, 2**54),  # past float's exact integers
        st.integers(2**62, 2**70),  # past 64 bits: the scalar path answers those owners
    ),
    max_size=40,
)
owners = st.lists(
    st.lists(sketch_values.map(lambda v: QuantileSketch.of(v).to_bytes()), max_size=6),
    max_size=12,
)


def scalar(owner: list[bytes], q: float) -> float | str:
    try:
        return scalar_quantile(owner, q)
    except ValueError:
        return "no values"


@settings(max_examples=200, deadline=None)
@given(owners, st.sampled_from(QS))
def test_equal_to_merging_one_by_one(found: list[list[bytes]], q: float) -> None:
    answerable = [owner for owner in found if scalar(owner, q) != "no values"]
    assert merged_quantiles(answerable, q) == [scalar_quantile(o, q) for o in answerable]


def test_zeros_duplicates_and_huge_values() -> None:
    steady = QuantileSketch.of([5_000_000] * 100).to_bytes()
    owners = [
        [steady, steady, steady],  # the same sketch merged three times
        [QuantileSketch.of([0, 0, 0, 7]).to_bytes()],  # mostly zeros
        [QuantileSketch.of([0]).to_bytes(), QuantileSketch().to_bytes()],  # an empty sketch
        [QuantileSketch.of([2**53 + 1, 2**60, MAX_VALUE]).to_bytes()],  # beyond 2**63
        [QuantileSketch.of([1, 2**40]).to_bytes(), steady],
    ]
    for q in QS:
        assert merged_quantiles(owners, q) == [scalar_quantile(o, q) for o in owners]


def test_more_buckets_than_a_sketch_keeps_folds_as_the_scalar_merge() -> None:
    wide = [
        QuantileSketch.of([int(1.03**i) + i for i in range(j, 3000, 7)]).to_bytes()
        for j in range(7)
    ]
    for q in (0.01, 0.5, 0.95):
        assert merged_quantiles([wide], q) == [scalar_quantile(wide, q)]


def test_batches_larger_than_one_pass() -> None:
    blob = QuantileSketch.of(range(1, 2_000, 3)).to_bytes()
    many = [[blob] * 3 for _ in range(20_000)]  # several batches of serialized bytes
    found = merged_quantiles(many, 0.95)
    assert found == [scalar_quantile(many[0], 0.95)] * len(many)


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        b"\x02\x00\x00",
        QuantileSketch.of([5, 9, 1000]).to_bytes()[:-1],
        QuantileSketch.of([5, 9, 1000]).to_bytes() + b"\x00",
        b"\x01\x00\x01\x05\x00\x05\x00",  # a bucket counting nothing
        b"\x01\x00\x01\x05\x01\x63\x00",  # a maximum outside its bucket
    ],
)
def test_a_damaged_sketch_raises_as_the_scalar_merge_does(damaged: bytes) -> None:
    good = QuantileSketch.of([3, 4, 5]).to_bytes()
    with pytest.raises(DecodeError) as scalar_error:
        scalar_quantile([good, damaged], 0.5)
    with pytest.raises(DecodeError) as batch_error:
        merged_quantiles([[good], [good, damaged]], 0.5)
    assert str(batch_error.value) == str(scalar_error.value)


def test_an_owner_without_values_raises() -> None:
    with pytest.raises(ValueError):
        merged_quantiles([[QuantileSketch().to_bytes()]], 0.5)
    with pytest.raises(ValueError):
        merged_quantiles([[b"\x01\x00\x00"]], 1.5)


# --- merged sketches, serialized (namespace rollups) ----------------------------------------


@settings(max_examples=200, deadline=None)
@given(owners)
def test_merged_sketches_equal_merging_one_by_one(found: list[list[bytes]]) -> None:
    assert merged_sketches(found) == [scalar_merge(owner) for owner in found]


def test_merged_sketches_of_zeros_empties_wide_and_many() -> None:
    steady = QuantileSketch.of([5_000_000] * 100).to_bytes()
    wide = [
        QuantileSketch.of([int(1.03**i) + i for i in range(j, 3000, 7)]).to_bytes()
        for j in range(7)
    ]
    found = [
        [steady, steady],
        [QuantileSketch.of([0, 0, 7]).to_bytes(), QuantileSketch().to_bytes()],
        [QuantileSketch().to_bytes()],  # no values: the empty sketch
        [],
        wide,  # more buckets than a sketch keeps: folded as the scalar merge folds
        [QuantileSketch.of([2**53 + 1, 2**60, MAX_VALUE]).to_bytes()],  # beyond 2**63
    ]
    assert merged_sketches(found) == [scalar_merge(owner) for owner in found]
    many = [[QuantileSketch.of(range(1, 2_000, k)).to_bytes() for k in (3, 5)]] * 5_000
    assert merged_sketches(many) == [scalar_merge(many[0])] * len(many)


@pytest.mark.parametrize(
    "damaged", [b"", b"\x02\x00\x00", QuantileSketch.of([5, 9]).to_bytes()[:-1]]
)
def test_merged_sketches_raise_on_a_damaged_sketch(damaged: bytes) -> None:
    good = QuantileSketch.of([3, 4, 5]).to_bytes()
    with pytest.raises(DecodeError) as scalar_error:
        scalar_merge([good, damaged])
    with pytest.raises(DecodeError) as batch_error:
        merged_sketches([[good], [good, damaged]])
    assert str(batch_error.value) == str(scalar_error.value)

"""``Samples``: a batch's samples as columns, equal to the same samples as objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.domain import Batch, Kind, Sample, Samples, SeriesKey

KEYS = [SeriesKey.for_container("shop", f"web-{i}", "app") for i in range(5)]

samples_strategy = st.lists(
    st.builds(
        Sample,
        st.sampled_from(KEYS),
        st.integers(0, 2**40),
        st.integers(0, 60_000),
        st.integers(0, 2**62),
        st.integers(0, 2**62),
    ),
    max_size=30,
)


@given(samples_strategy, st.integers(-35, 35), st.integers(-35, 35))
def test_columns_give_back_the_samples_they_were_made_of(
    samples: list[Sample], start: int, stop: int
) -> None:
    columns = Samples.of(samples)
    assert len(columns) == len(samples)
    assert list(columns) == samples
    assert columns == samples and columns == tuple(samples)
    assert [columns[i] for i in range(-len(samples), len(samples))] == samples * 2
    assert list(columns[start:stop]) == samples[start:stop]
    assert list(columns.rows()) == [
        (s.key, s.timestamp_ms, s.window_ms, s.cpu_nanocores, s.memory_bytes) for s in samples
    ]
    halves = Samples.joined([Samples.of(samples[:3]), Samples.of(samples[3:])])
    assert halves == columns and list(halves) == samples
    assert Samples.of(columns) is columns  # already columns: not copied


def test_a_different_sample_makes_them_unequal() -> None:
    one = Samples.of([Sample(KEYS[0], 1, 2, 3, 4)])
    assert one != Samples.of([Sample(KEYS[0], 1, 2, 3, 5)])
    assert one != [Sample(KEYS[1], 1, 2, 3, 4)]
    assert one != []
    assert one != "not samples"


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per sample"):
        Samples(KEYS[:2], [1, 2], [1, 2], [1, 2], [1])


def test_a_batch_takes_any_sequence_of_samples_as_columns() -> None:
    samples = (Sample(KEYS[0], 1, 2, 3, 4), Sample(KEYS[1], 5, 6, 7, 8))
    batch = Batch(Kind.CONTAINER, samples)
    assert isinstance(batch.samples, Samples)
    assert batch.samples.keys == [KEYS[0], KEYS[1]]
    assert batch.samples.cpu_nanocores == [3, 7]
    assert not batch.samples.restored
    assert len(Batch(Kind.NODE).samples) == 0

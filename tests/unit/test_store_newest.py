"""The writer's newest (timestamp, digest) per series: answers as two dictionaries would."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.store.newest import NewestTable

INT64 = st.integers(-(2**63), 2**63 - 1)
SIDS = st.integers(0, 3_000)
UPDATES = st.lists(
    st.tuples(st.dictionaries(SIDS, INT64, max_size=20), st.dictionaries(SIDS, INT64, max_size=20)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(updates=UPDATES, asked=st.lists(st.integers(-5, 3_100), max_size=30))
def test_the_table_answers_as_dictionaries_of_the_same_updates(
    updates: list[tuple[dict[int, int], dict[int, int]]], asked: list[int]
) -> None:
    table = NewestTable()
    timestamps: dict[int, int] = {}
    digests: dict[int, int] = {}
    for stamps, marks in updates:
        table.update(stamps, marks)
        timestamps.update(stamps)
        digests.update(marks)
    asked += list(timestamps) + list(digests)
    assert table.timestamps(asked) == [timestamps.get(sid) for sid in asked]
    assert table.digests(asked) == [digests.get(sid) for sid in asked]
    assert [table.timestamp(sid) for sid in asked] == [timestamps.get(sid) for sid in asked]
    assert [table.digest(sid) for sid in asked] == [digests.get(sid) for sid in asked]
    assert len(table) == len(timestamps)


@settings(max_examples=200, deadline=None)
@given(
    stored=st.dictionaries(SIDS, st.integers(-(10**15), 10**15), max_size=30),
    polled=st.lists(st.tuples(st.integers(-5, 3_100), st.integers(-(10**15), 10**15)), max_size=30),
)
def test_newer_is_true_past_the_stored_newest_and_for_unknown_series(
    stored: dict[int, int], polled: list[tuple[int, int]]
) -> None:
    table = NewestTable.of(stored)
    sids = [sid for sid, _ in polled] + list(stored)
    stamps = [ts for _, ts in polled] + list(stored.values())
    expected = [sid not in stored or ts > stored[sid] for sid, ts in zip(sids, stamps, strict=True)]
    assert table.newer(_column(sids), _column(stamps)).tolist() == expected


def test_columns_from_a_load_keep_digests_apart_from_timestamps() -> None:
    table = NewestTable()
    table.set_from([3, 1_000_000], [10, 20], None)
    table.set_from([3], [11], [-(2**63)])
    assert table.timestamps([3, 1_000_000, 4]) == [11, 20, None]
    assert table.digests([3, 1_000_000]) == [-(2**63), None]
    table.set_digest(1_000_000, 2**63 - 1)
    assert table.digest(1_000_000) == 2**63 - 1


def test_forgotten_series_answer_none_and_the_others_keep_theirs() -> None:
    table = NewestTable.of({1: 10, 2: 20, 3: 30}, {1: 7, 2: 8})
    table.forget([2, 3, 99, -1])  # unknown and out-of-range ids are ignored
    assert table.timestamps([1, 2, 3]) == [10, None, None]
    assert table.digests([1, 2]) == [7, None]
    assert len(table) == 1
    assert table.newer(_column([2, 1]), _column([5, 5])).tolist() == [True, False]


def test_the_table_holds_the_series_it_is_told_about_whatever_their_ids() -> None:
    # Ids grow with every series the database ever made (pods replaced all the time): the
    # table's size follows the series held, not the largest id.
    import tracemalloc

    tracemalloc.start()
    try:
        table = NewestTable()
        table.set_from([5_000_000, 7], [1, 2], [3, 4])
        table.update({9_000_000: 5}, {})
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 100_000
    assert table.timestamps([7, 5_000_000, 9_000_000, 8]) == [2, 1, 5, None]
    table.forget([5_000_000])
    assert table.timestamps([7, 5_000_000, 9_000_000]) == [2, None, 5]
    assert table.digests([7, 5_000_000]) == [4, None]


def _column(values: list[int]) -> npt.NDArray[np.int64]:
    return np.array(values, np.int64)

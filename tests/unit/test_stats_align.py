"""``stats.align.aligned_sum`` (pure): PromQL's alignment of series that report at different
instants, against a direct reading of its definition on random runs."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from recorder.stats.align import aligned_sum

runs = st.lists(
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 10**12)), max_size=20).map(
        lambda pairs: sorted(dict(pairs).items())
    ),
    max_size=5,
)


@given(runs, st.integers(1, 200), st.integers(1, 120))
def test_each_runs_newest_sample_within_the_lookback_summed(
    found: list[list[tuple[int, int]]], lookback: int, every: int
) -> None:
    instants = np.arange(0, 700, every, dtype=np.int64)
    columns = [([t for t, _ in run], [v for _, v in run]) for run in found]
    stamps, sums = aligned_sum(columns, instants, lookback)
    expected = []
    for t in instants.tolist():
        values = []
        for run in found:
            inside = [v for ts, v in run if t - lookback < ts <= t]
            if inside:
                values.append(inside[-1])
        if values:
            expected.append((t, sum(values)))
    assert list(zip(stamps.tolist(), sums.tolist(), strict=True)) == expected


def test_no_runs_no_values() -> None:
    stamps, sums = aligned_sum([], np.arange(0, 10, dtype=np.int64), 5)
    assert len(stamps) == len(sums) == 0
    stamps, _ = aligned_sum([([], [])], np.arange(0, 10, dtype=np.int64), 5)
    assert len(stamps) == 0

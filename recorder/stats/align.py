"""PromQL's alignment of series that report at different instants (pure): a workload is the sum
of its pods aligned this way, at query time (``recorder.query.workload_sums``) and at
compaction (``recorder.store.workload_compaction``), so both answer the same.

At each instant ``t``, each run's (pod's) newest sample in ``(t - lookback_ms, t]`` counts;
the runs' counted values are summed; an instant where no run has one has no value (missing is
missing, not zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["aligned_sum", "newest_within", "span"]


def aligned_sum(
    runs: Sequence[
        tuple[Sequence[int] | npt.NDArray[np.int64], Sequence[int] | npt.NDArray[np.int64]]
    ],
    instants: npt.NDArray[np.int64],
    lookback_ms: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The sum over ``runs`` (each ``(timestamps_ms, values)``, time-ordered, distinct
    timestamps) at each of ``instants`` (ascending) of each run's newest sample in
    ``(t - lookback_ms, t]``: ``(instants with a value, their sums)``."""
    total = np.zeros(len(instants), np.int64)
    present = np.zeros(len(instants), bool)
    for stamps_in, values_in in runs:
        if not len(stamps_in):
            continue
        stamps = np.asarray(stamps_in, np.int64)
        low, high = span(stamps, instants, lookback_ms)
        if low >= high:
            continue
        at, found = newest_within(stamps, instants[low:high], lookback_ms)
        values = np.asarray(values_in, np.int64)
        total[low:high] += np.where(found, values[at], 0)
        present[low:high] |= found
    return instants[present], total[present]


def span(
    stamps: Sequence[int] | npt.NDArray[np.int64],
    instants: npt.NDArray[np.int64],
    lookback_ms: int,
) -> tuple[int, int]:
    """The slice ``[low, high)`` of ``instants`` (ascending) where a run with these
    time-ordered, non-empty ``stamps`` can have a sample within the lookback: from its first
    sample to its last plus the lookback. Outside it the run counts nowhere."""
    low = int(np.searchsorted(instants, stamps[0], "left"))
    high = int(np.searchsorted(instants, stamps[-1] + lookback_ms, "left"))
    return low, high


def newest_within(
    stamps_in: Sequence[int] | npt.NDArray[np.int64],
    instants: npt.NDArray[np.int64],
    lookback_ms: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """For each instant ``t``, the index of the run's newest sample in ``(t - lookback_ms,
    t]`` and whether there is one (the index is 0 where there is none); ``stamps_in`` is
    time-ordered and not empty."""
    stamps = np.asarray(stamps_in, np.int64)
    newest = np.searchsorted(stamps, instants, "right") - 1
    found = newest >= 0
    at = np.where(found, newest, 0)
    found &= stamps[at] > instants - lookback_ms
    return at, found

"""Per series id, the newest stored sample's timestamp and the digest of its values.

The writer consults this for every sample it is handed (design §5: a sample equal to its
series' stored newest one is skipped). Two numpy columns indexed by series id hold it, instead
of two dictionaries of Python integers: at 200,000 series those held about 35 MB (a dict entry
and a boxed integer per series and column), and every reload after a database outage built a
second set while the first was still referenced, leaving the heap fragmented at the larger size
(measured: the worker rested 130 MB higher after an outage). Series ids are the series table's
own, dense enough for a column (pods' series, made by compaction, take ids too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_GROWTH = 1.5


class NewestTable:
    """Newest (timestamp, digest) per series id; unknown ids answer ``None``.

    A timestamp can be known without its digest: the series table keeps each series' last seen
    timestamp, while the digest comes from the head row of that sample (absent once compacted).
    """

    __slots__ = ("_digest", "_has_digest", "_has_ts", "_ts")

    def __init__(self) -> None:
        self._ts: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._digest: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._has_ts: npt.NDArray[np.bool_] = np.zeros(0, np.bool_)
        self._has_digest: npt.NDArray[np.bool_] = np.zeros(0, np.bool_)

    @classmethod
    def of(cls, timestamps: dict[int, int], digests: dict[int, int] | None = None) -> NewestTable:
        """A table holding these (series id to timestamp, and to digest)."""
        table = cls()
        table.update(timestamps, digests or {})
        return table

    def __len__(self) -> int:
        """How many series have a newest timestamp."""
        return int(self._has_ts.sum())

    def timestamp(self, sid: int) -> int | None:
        if 0 <= sid < len(self._ts) and self._has_ts[sid]:
            return int(self._ts[sid])
        return None

    def digest(self, sid: int) -> int | None:
        if 0 <= sid < len(self._digest) and self._has_digest[sid]:
            return int(self._digest[sid])
        return None

    def timestamps(self, sids: Sequence[int]) -> list[int | None]:
        """``timestamp`` of each id, in one pass."""
        return self._gather(sids, self._ts, self._has_ts)

    def digests(self, sids: Sequence[int]) -> list[int | None]:
        """``digest`` of each id, in one pass."""
        return self._gather(sids, self._digest, self._has_digest)

    def newer(self, sids: Sequence[int], timestamps: Sequence[int]) -> list[bool]:
        """Per position, whether ``timestamps[i]`` is newer than series ``sids[i]``'s newest
        timestamp (true when it has none)."""
        ids = np.fromiter(sids, np.int64, len(sids))
        stamps = np.fromiter(timestamps, np.int64, len(timestamps))
        inside = (ids >= 0) & (ids < len(self._ts))
        newer = np.ones(len(ids), np.bool_)
        at = ids[inside]
        newer[inside] = ~self._has_ts[at] | (stamps[inside] > self._ts[at])
        return newer.tolist()

    def update(self, timestamps: dict[int, int], digests: dict[int, int]) -> None:
        """Set these series' newest timestamps and digests (each map by series id)."""
        self._set(timestamps, "_ts", "_has_ts")
        self._set(digests, "_digest", "_has_digest")

    def set_digest(self, sid: int, value: int) -> None:
        self._set({sid: value}, "_digest", "_has_digest")

    def set_from(
        self,
        sids: Sequence[int] | npt.NDArray[np.int64],
        timestamps: Sequence[int] | npt.NDArray[np.int64],
        digests: Sequence[int] | npt.NDArray[np.int64] | None,
    ) -> None:
        """Set from parallel columns (as ``load`` reads them); ``digests`` may be None."""
        ids = _int64(sids)
        if not len(ids):
            return
        self._grow(int(ids.max()) + 1)
        self._ts[ids] = _int64(timestamps)
        self._has_ts[ids] = True
        if digests is not None:
            self._digest[ids] = _int64(digests)
            self._has_digest[ids] = True

    # --- internals ----------------------------------------------------------------------

    def _gather(
        self,
        sids: Sequence[int],
        values: npt.NDArray[np.int64],
        known: npt.NDArray[np.bool_],
    ) -> list[int | None]:
        ids = np.fromiter(sids, np.int64, len(sids))
        inside = (ids >= 0) & (ids < len(values))
        held = np.zeros(len(ids), np.bool_)
        held[inside] = known[ids[inside]]
        found = np.zeros(len(ids), np.int64)
        found[held] = values[ids[held]]
        return [v if h else None for v, h in zip(found.tolist(), held.tolist(), strict=True)]

    def _set(self, values: dict[int, int], column: str, known: str) -> None:
        if not values:
            return
        ids = np.fromiter(values.keys(), np.int64, len(values))
        self._grow(int(ids.max()) + 1)
        getattr(self, column)[ids] = np.fromiter(values.values(), np.int64, len(values))
        getattr(self, known)[ids] = True

    def _grow(self, size: int) -> None:
        if size <= len(self._ts):
            return
        size = max(size, int(len(self._ts) * _GROWTH))
        for column in ("_ts", "_digest", "_has_ts", "_has_digest"):
            old = getattr(self, column)
            new = np.zeros(size, old.dtype)
            new[: len(old)] = old
            setattr(self, column, new)


def _int64(values: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if isinstance(values, np.ndarray):
        return values.astype(np.int64, copy=False)
    return np.fromiter(values, np.int64, len(values))

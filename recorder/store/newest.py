"""Per series id, the newest stored sample's timestamp and the digest of its values.

The writer consults this for every sample it is handed (design §5: a sample equal to its
series' stored newest one is skipped). Numpy columns hold it (the series ids, sorted, and
beside them the timestamps and digests), instead of two dictionaries of Python integers: at
200,000 series those held about 35 MB (a dict entry and a boxed integer per series and
column), and every reload after a database outage built a second set while the first was
still referenced, leaving the heap fragmented at the larger size (measured: the worker rested
130 MB higher after an outage). The table holds only the series it is told about and forgets
those the writer forgets: a column indexed by series id would grow with every id the database
ever gave (pods' series made by compaction take ids too, and a cluster whose pods are replaced
all the time makes thousands of series an hour).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_VALUES = ("_ts", "_digest", "_has_ts", "_has_digest")
"""The columns parallel to the sorted ids."""


class NewestTable:
    """Newest (timestamp, digest) per series id; unknown ids answer ``None``.

    A timestamp can be known without its digest: the series table keeps each series' last seen
    timestamp, while the digest comes from the head row of that sample (absent once compacted).
    """

    __slots__ = ("_digest", "_has_digest", "_has_ts", "_sids", "_ts")

    def __init__(self) -> None:
        self._sids: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        """The series ids held, sorted; the other columns are parallel to it."""
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
        return self.timestamps([sid])[0]

    def digest(self, sid: int) -> int | None:
        return self.digests([sid])[0]

    def timestamps(self, sids: Sequence[int]) -> list[int | None]:
        """``timestamp`` of each id, in one pass."""
        return self._gather(sids, self._ts, self._has_ts)

    def digests(self, sids: Sequence[int]) -> list[int | None]:
        """``digest`` of each id, in one pass."""
        return self._gather(sids, self._digest, self._has_digest)

    def newer(
        self, sids: npt.NDArray[np.int64], timestamps: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """Per position, whether ``timestamps[i]`` is newer than series ``sids[i]``'s newest
        timestamp (true when it has none)."""
        at, found = self._find(sids)
        newer = np.ones(len(at), np.bool_)
        where = at[found]
        newer[found] = ~self._has_ts[where] | (timestamps[found] > self._ts[where])
        return newer

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
        at = self._place(ids)
        self._ts[at] = _int64(timestamps)
        self._has_ts[at] = True
        if digests is not None:
            self._digest[at] = _int64(digests)
            self._has_digest[at] = True

    def forget(self, sids: Sequence[int]) -> None:
        """Drop these series (they answer ``None`` again, and take no room)."""
        at, found = self._find(np.fromiter(sids, np.int64, len(sids)))
        if not found.any():
            return
        keep = np.ones(len(self._sids), np.bool_)
        keep[at[found]] = False
        for column in self.__slots__:
            setattr(self, column, getattr(self, column)[keep])

    # --- internals ----------------------------------------------------------------------

    def _find(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Each id's position in the columns, and whether it is held there."""
        held = self._sids
        if not len(held):
            return np.zeros(len(ids), np.intp), np.zeros(len(ids), np.bool_)
        at = np.minimum(np.searchsorted(held, ids), len(held) - 1)
        return at, held[at] == ids

    def _place(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Positions of ``ids``, adding those not held yet (without a timestamp or digest)."""
        at, found = self._find(ids)
        if found.all():
            return at
        new = np.unique(ids[~found])
        sids = np.concatenate((self._sids, new))
        # Ids the database just gave are larger than any held (kept in order as they are);
        # others (a load, another writer's rows) are merged in order.
        order = (
            None
            if not len(new) or sids[: len(self._sids)].max(initial=-1) < new[0]
            else (np.argsort(sids, kind="stable"))
        )
        for column in _VALUES:
            old = getattr(self, column)
            grown = np.zeros(len(sids), old.dtype)
            grown[: len(old)] = old
            setattr(self, column, grown if order is None else grown[order])
        self._sids = sids if order is None else sids[order]
        return self._find(ids)[0]

    def _gather(
        self,
        sids: Sequence[int],
        values: npt.NDArray[np.int64],
        known: npt.NDArray[np.bool_],
    ) -> list[int | None]:
        at, found = self._find(np.fromiter(sids, np.int64, len(sids)))
        held = np.zeros(len(at), np.bool_)
        held[found] = known[at[found]]
        got = np.zeros(len(at), np.int64)
        got[held] = values[at[held]]
        return [v if h else None for v, h in zip(got.tolist(), held.tolist(), strict=True)]

    def _set(self, values: dict[int, int], column: str, known: str) -> None:
        if not values:
            return
        at = self._place(np.fromiter(values.keys(), np.int64, len(values)))
        getattr(self, column)[at] = np.fromiter(values.values(), np.int64, len(values))
        getattr(self, known)[at] = True


def _int64(values: Sequence[int] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if isinstance(values, np.ndarray):
        return values.astype(np.int64, copy=False)
    return np.fromiter(values, np.int64, len(values))

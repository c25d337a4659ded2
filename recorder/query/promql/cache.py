"""A cache of range-query answers aligned to their steps, so a dashboard that refreshes (the
same query over a window that slides by a few steps) evaluates only its new steps.

**What is kept.** An answer is kept by query text, step and the steps' phase (``start mod
step``): the value at each step of the immutable past. A step ``t`` reads samples at ``t``
and before only (no ``@``, no negative ``offset``: such queries are not cached), so its value
is fixed once no sample at or before ``t`` can still change. The source says where that is
(``Source.freshness``): the store's head holds the samples not compacted yet, and a late
sample lands there, so every step before the head's oldest sample is past; the generation
(the newest and oldest compacted block and the rollups' watermark) changes with every
compaction that closes a block, every retention and rollup round, and a cached answer of an
older generation is dropped. A late sample that arrives *and* is compacted between two
looks at the same query is the one change this does not see: compaction closes at most a
block old, and entries live at most ``max_age_ms`` (a block), which bounds such staleness.

**Bounds.** At most ``max_bytes`` in all (the values, flags and labels of each entry), least
recently used first out; an answer larger than a quarter of that is not kept.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock

import numpy as np

from recorder.query.promql.evaluation import Result, check_range, range_query
from recorder.query.promql.source import Source
from recorder.query.promql.syntax import Node, SelectorNode, parse
from recorder.query.promql.values import Labels, ScalarValue, Steps, StepSeries, VectorValue

DEFAULT_MAX_BYTES = 64 * 1024 * 1024

Key = tuple[str, int, int, str]
"""(query text, step, phase, scope)"""


@dataclass(frozen=True, slots=True)
class Entry:
    generation: tuple[int, ...]
    first_ms: int
    last_ms: int
    value: VectorValue | ScalarValue
    warnings: tuple[str, ...]
    size: int
    stored_ms: int


class ResultCache:
    """The cache; safe to share between the threads that evaluate queries."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        max_age_ms: int = 3_600_000,
        on_lookup: Callable[[str], None] | None = None,
    ) -> None:
        """``on_lookup`` is told ``"hit"`` (every step from the cache), ``"partial"`` (some),
        ``"miss"`` or ``"bypass"`` (a query that cannot be cached) of each range query."""
        self.max_bytes = max_bytes
        self.max_age_ms = max_age_ms
        self.on_lookup = on_lookup
        self.size = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._lock = Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def range_query(
        self,
        source: Source,
        text: str,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        *,
        now_ms: int,
        scope: str = "",
    ) -> Result:
        """``evaluation.range_query``'s answer, its past steps from the cache where kept.
        ``scope`` tells apart callers that see different series (access control)."""
        check_range(start_ms, end_ms, step_ms)
        if not _cacheable(parse(text)):
            self._tell("bypass")
            return range_query(source, text, start_ms, end_ms, step_ms)
        horizon_ms, generation = source.freshness()
        key = (text, step_ms, start_ms % step_ms, scope)
        entry = self._get(key, generation, now_ms)
        last_ms = -1 if entry is None else _before(horizon_ms, entry, step_ms)
        if entry is None or not entry.first_ms <= start_ms <= last_ms:
            self._tell("miss")
            result = range_query(source, text, start_ms, end_ms, step_ms)
        else:
            upto = min(end_ms, last_ms)
            cached = _slice(entry.value, entry.first_ms, step_ms, start_ms, upto)
            if upto == end_ms:
                self._tell("hit")
                result = Result(cached, Steps.of(start_ms, end_ms, step_ms), False, entry.warnings)
            else:
                self._tell("partial")
                rest = range_query(source, text, upto + step_ms, end_ms, step_ms)
                result = Result(
                    _joined(cached, rest.value, (upto - start_ms) // step_ms + 1, rest.steps.count),
                    Steps.of(start_ms, end_ms, step_ms),
                    False,
                    tuple(dict.fromkeys(entry.warnings + rest.warnings)),
                )
        self._keep(key, result, generation, horizon_ms, now_ms)
        return result

    def _tell(self, outcome: str) -> None:
        if self.on_lookup is not None:
            self.on_lookup(outcome)

    def _get(self, key: Key, generation: tuple[int, ...], now_ms: int) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.generation != generation or now_ms - entry.stored_ms > self.max_age_ms:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def _keep(
        self,
        key: Key,
        result: Result,
        generation: tuple[int, ...],
        horizon_ms: int,
        now_ms: int,
    ) -> None:
        value, steps = result.value, result.steps
        if not isinstance(value, VectorValue | ScalarValue):
            return
        times = steps.times_ms
        past = int(np.searchsorted(times, horizon_ms, "left"))
        if past == 0:
            return
        last_ms = int(times[past - 1])
        kept = _slice(value, steps.start_ms, steps.step_ms, steps.start_ms, last_ms)
        size = _size(kept)
        if size > self.max_bytes // 4:
            return
        entry = Entry(generation, steps.start_ms, last_ms, kept, result.warnings, size, now_ms)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = entry
            self.size += size
            while self.size > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Key) -> None:
        self.size -= self._entries.pop(key).size


def _before(horizon_ms: int, entry: Entry, step_ms: int) -> int:
    """The last kept step before ``horizon_ms`` (a late sample may have moved it back)."""
    if horizon_ms > entry.last_ms:
        return entry.last_ms
    return entry.first_ms + (horizon_ms - 1 - entry.first_ms) // step_ms * step_ms


def _cacheable(node: Node) -> bool:
    """Whether every step reads samples at or before itself only: no ``@`` and no negative
    ``offset`` anywhere."""
    if isinstance(node, SelectorNode):
        return node.at is None and node.offset_ms >= 0
    for field in dataclasses.fields(node):
        child = getattr(node, field.name)
        children = child if isinstance(child, tuple) else (child,)
        for one in children:
            if dataclasses.is_dataclass(one) and not _cacheable(one):  # type: ignore[arg-type]
                return False
    return True


def _slice(
    value: VectorValue | ScalarValue, first_ms: int, step_ms: int, from_ms: int, to_ms: int
) -> VectorValue | ScalarValue:
    """The steps ``from_ms`` to ``to_ms`` of a value whose first step is ``first_ms``."""
    a = (from_ms - first_ms) // step_ms
    b = (to_ms - first_ms) // step_ms + 1
    if isinstance(value, ScalarValue):
        return ScalarValue(value.values[a:b].copy())
    out = []
    for s in value.series:
        present = s.present[a:b]
        if present.any():
            out.append(StepSeries(s.labels, s.values[a:b].copy(), present.copy()))
    return VectorValue(tuple(out))


def _joined(
    first: VectorValue | ScalarValue, then: object, n_first: int, n_then: int
) -> VectorValue | ScalarValue:
    """Two values over consecutive steps (``n_first`` and ``n_then`` of them) as one."""
    if isinstance(first, ScalarValue):
        assert isinstance(then, ScalarValue)
        return ScalarValue(np.concatenate((first.values, then.values)))
    assert isinstance(then, VectorValue)
    by_labels: dict[Labels, tuple[StepSeries | None, StepSeries | None]] = {}
    for s in first.series:
        by_labels[s.labels] = (s, None)
    for s in then.series:
        by_labels[s.labels] = (by_labels.get(s.labels, (None, None))[0], s)
    out = []
    for labels, (a, b) in sorted(by_labels.items()):
        values = np.concatenate(
            (
                a.values if a is not None else np.zeros(n_first),
                b.values if b is not None else np.zeros(n_then),
            )
        )
        present = np.concatenate(
            (
                a.present if a is not None else np.zeros(n_first, bool),
                b.present if b is not None else np.zeros(n_then, bool),
            )
        )
        out.append(StepSeries(labels, values, present))
    return VectorValue(tuple(out))


def _size(value: VectorValue | ScalarValue) -> int:
    if isinstance(value, ScalarValue):
        return int(value.values.nbytes) + 64
    total = 64
    for s in value.series:
        total += int(s.values.nbytes + s.present.nbytes) + 200
        total += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in s.labels)
    return total

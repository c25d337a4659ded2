"""The one block-statistics record: what compaction keeps of one series over one block, what
rollups keep over one day, and what every statistics read returns.

Per block: the time range, the sample count and the smallest gap between samples (the
resolution as seen), then for CPU and for memory the sum, the sum of squares (so the standard
deviation is exact at every tier), min, max, the last value and a mergeable quantile sketch.
Merging records gives the record of the union of their samples (the blocks must not share a
timestamp: deduplication happens before statistics are taken).

The stored columns are named ``<field>`` and ``<resource>_<part>`` (``cpu_sum``,
``memory_sketch``...); :data:`COLUMNS` lists them once, for the schema and every reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from recorder.stats.codec import ChunkSamples
from recorder.stats.sketch import QuantileSketch

RESOURCES = ("cpu", "memory")
BLOCK_FIELDS = ("first_ms", "last_ms", "count", "interval_ms")
RESOURCE_PARTS = ("sum", "sumsq", "min", "max", "last", "sketch")
COLUMNS = BLOCK_FIELDS + tuple(f"{r}_{p}" for r in RESOURCES for p in RESOURCE_PARTS)
"""Every stored statistics column, in order."""


def smallest_gap(timestamps_ms: Sequence[int]) -> int:
    """The smallest gap between consecutive timestamps (sorted, distinct); 0 for fewer than 2."""
    return min((later - earlier for earlier, later in pairwise(timestamps_ms)), default=0)


def squares_to_bytes(value: int | None) -> bytes | None:
    """A sum of squares (it outgrows 64 bits: 240 samples of 100 cores already do) as stored."""
    if value is None:
        return None
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def squares_from_bytes(data: bytes | None) -> int | None:
    return None if data is None else int.from_bytes(data, "big")


@dataclass(frozen=True, slots=True)
class ResourceStats:
    """One resource's statistics over a block. ``squares`` is None for a block compacted
    before sums of squares were kept and whose samples are gone."""

    total: int
    squares: int | None
    minimum: int
    maximum: int
    last: int
    sketch: bytes

    @classmethod
    def of(cls, values: Sequence[int]) -> ResourceStats:
        return cls(
            total=sum(values),
            squares=sum(v * v for v in values),
            minimum=min(values),
            maximum=max(values),
            last=values[-1],
            sketch=QuantileSketch.of(values).to_bytes(),
        )


@dataclass(frozen=True, slots=True)
class BlockStats:
    first_ms: int
    last_ms: int
    count: int
    interval_ms: int
    """Smallest gap between consecutive samples, 0 for one sample."""
    cpu: ResourceStats
    memory: ResourceStats

    def resource(self, name: str) -> ResourceStats:
        return self.cpu if name == "cpu" else self.memory

    @classmethod
    def of(cls, samples: ChunkSamples) -> BlockStats:
        """The statistics of deduplicated, time-ordered samples (at least one)."""
        stamps = samples.timestamps_ms
        return cls(
            first_ms=stamps[0],
            last_ms=stamps[-1],
            count=len(stamps),
            interval_ms=smallest_gap(stamps),
            cpu=ResourceStats.of(samples.cpu_nanocores),
            memory=ResourceStats.of(samples.memory_bytes),
        )

    def to_columns(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "count": self.count,
            "interval_ms": self.interval_ms,
        }
        for name in RESOURCES:
            part = self.resource(name)
            out[f"{name}_sum"] = part.total
            out[f"{name}_sumsq"] = squares_to_bytes(part.squares)
            out[f"{name}_min"] = part.minimum
            out[f"{name}_max"] = part.maximum
            out[f"{name}_last"] = part.last
            out[f"{name}_sketch"] = part.sketch
        return out

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> BlockStats:
        """From the values of :data:`COLUMNS`, in that order (what a reader selected)."""
        (
            first_ms,
            last_ms,
            count,
            interval_ms,
            cpu_sum,
            cpu_sumsq,
            cpu_min,
            cpu_max,
            cpu_last,
            cpu_sketch,
            memory_sum,
            memory_sumsq,
            memory_min,
            memory_max,
            memory_last,
            memory_sketch,
        ) = values
        return cls(
            first_ms,
            last_ms,
            count,
            interval_ms,
            ResourceStats(
                cpu_sum, squares_from_bytes(cpu_sumsq), cpu_min, cpu_max, cpu_last, cpu_sketch
            ),
            ResourceStats(
                memory_sum,
                squares_from_bytes(memory_sumsq),
                memory_min,
                memory_max,
                memory_last,
                memory_sketch,
            ),
        )


def _merge_resource(parts: Sequence[ResourceStats]) -> ResourceStats:
    sketch = QuantileSketch()
    for part in parts:
        sketch.merge_bytes(part.sketch)
    squares = [p.squares for p in parts]
    return ResourceStats(
        total=sum(p.total for p in parts),
        squares=None if None in squares else sum(s for s in squares if s is not None),
        minimum=min(p.minimum for p in parts),
        maximum=max(p.maximum for p in parts),
        last=parts[-1].last,
        sketch=sketch.to_bytes(),
    )


def merge(blocks: Iterable[BlockStats]) -> BlockStats:
    """The statistics of the union of non-overlapping blocks (at least one); ``last`` is the
    value of the block that ends last."""
    ordered = sorted(blocks, key=lambda b: b.last_ms)
    if not ordered:
        raise ValueError("merge needs at least one block")
    return BlockStats(
        first_ms=min(b.first_ms for b in ordered),
        last_ms=ordered[-1].last_ms,
        count=sum(b.count for b in ordered),
        interval_ms=min((b.interval_ms for b in ordered if b.interval_ms > 0), default=0),
        cpu=_merge_resource([b.cpu for b in ordered]),
        memory=_merge_resource([b.memory for b in ordered]),
    )

"""Per-client request rate limits: a token bucket per client (its token's identity when it
authenticated, else its address), refilled at ``rate`` requests a second up to ``burst``.

The buckets are bounded: beyond ``max_clients`` the least recently seen client's bucket is
forgotten (it starts full again, which errs towards letting a request through).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be more than 0 and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def exhausted(self, client: str) -> bool:
        """Whether ``client``'s next request would be refused (nothing is counted)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return False
        refilled = bucket.tokens + (self._clock() - bucket.updated) * self.rate
        return refilled < 1

    def take(self, client: str) -> int | None:
        """Count one request of ``client``: ``None`` when it may go on, else the seconds to
        wait before the next one would be let through (for ``Retry-After``)."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

"""A small cache of access decisions: bounded in size, each answer kept for its own time, and
one call in flight per key (a burst of requests with the same new token costs one review).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["DecisionCache"]

T = TypeVar("T")


class DecisionCache(Generic[T]):
    """``await get(key, decide)``: the cached answer while it is fresh, else ``decide()``'s
    (shared by every caller waiting on the same key), kept ``ttl(answer)`` seconds. An error
    of ``decide()`` reaches every waiter and is not cached. The least recently used answers go
    first beyond ``max_entries``."""

    def __init__(
        self,
        ttl: Callable[[T], float],
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._answers: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def peek(self, key: Hashable) -> T | None:
        """The fresh answer for ``key``, or None (none, stale, or None itself)."""
        known = self._answers.get(key)
        return known[1] if known is not None and known[0] > self._clock() else None

    async def get(self, key: Hashable, decide: Callable[[], Awaitable[T]]) -> T:
        while True:
            now = self._clock()
            known = self._answers.get(key)
            if known is not None:
                if known[0] > now:
                    self._answers.move_to_end(key)
                    return known[1]
                del self._answers[key]
            pending = self._pending.get(key)
            if pending is None:
                return await self._decide(key, decide)
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the request that was deciding went away: decide for this one

    async def _decide(self, key: Hashable, decide: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await decide()
        except asyncio.CancelledError:
            future.cancel()  # the waiters try again themselves
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(answer)
            self._answers[key] = (self._clock() + self._ttl(answer), answer)
            while len(self._answers) > self._max:
                self._answers.popitem(last=False)
            return answer
        finally:
            del self._pending[key]

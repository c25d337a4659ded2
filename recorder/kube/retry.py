"""When to try a Metrics API request again, and how long to wait (pure; the client sleeps).

Exponential backoff with jitter: attempt ``n`` (from 0) waits a uniformly random time between
half and all of ``min(max_delay, base_delay * 2**n)``, so replicas that failed together do not
retry together. A ``Retry-After`` from the server is honoured when it is longer. No retry starts
when its wait would end past the budget: a poll never runs into the next one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from recorder.errors import (
    MetricsApiError,
    MetricsApiTLSError,
    MetricsApiTransportError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_seconds: float = 0.25
    max_delay_seconds: float = 4.0
    budget_seconds: float = 15.0
    """Time from the first attempt after which no retry starts (about half a poll interval)."""

    def delay(
        self, attempt: int, retry_after_seconds: float | None, rng: random.Random | None = None
    ) -> float:
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2**attempt)
        wait = (rng or random).uniform(ceiling / 2, ceiling)
        if retry_after_seconds is not None:
            wait = max(wait, min(retry_after_seconds, self.max_delay_seconds))
        return wait

    def next_delay(
        self,
        error: MetricsApiError,
        *,
        attempt: int,
        elapsed_seconds: float,
        retry_after_seconds: float | None = None,
        credentials_refreshable: bool = False,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up now."""
        if attempt + 1 >= self.max_attempts or not retryable(error, credentials_refreshable):
            return None
        wait = self.delay(attempt, retry_after_seconds, rng)
        if elapsed_seconds + wait > self.budget_seconds:
            return None
        return wait


def retryable(error: MetricsApiError, credentials_refreshable: bool = False) -> bool:
    """Transient failures: 5xx and 429, timeouts, dropped connections; a 401 only when the
    credential comes from a file or plugin that may have been rotated a moment late."""
    if isinstance(error, MetricsApiTLSError):
        return False  # a certificate does not fix itself in seconds
    if isinstance(error, MetricsApiUnavailable | MetricsApiTransportError):
        return True
    return isinstance(error, MetricsApiUnauthorized) and credentials_refreshable

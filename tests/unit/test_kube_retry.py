"""The retry policy (recorder/kube/retry.py): jittered backoff within a budget, what is retried."""

from __future__ import annotations

import random

from recorder.errors import (
    MetricsApiForbidden,
    MetricsApiNotFound,
    MetricsApiTimeout,
    MetricsApiTLSError,
    MetricsApiUnauthorized,
    MetricsApiUnavailable,
)
from recorder.kube.retry import RetryPolicy, retryable


def test_backoff_has_jitter_and_respects_the_budget() -> None:
    policy = RetryPolicy(
        max_attempts=4, base_delay_seconds=1, max_delay_seconds=3, budget_seconds=5
    )
    rng = random.Random(7)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (1.5, 3)]):
        delays = {policy.delay(attempt, None, rng) for _ in range(50)}
        assert all(low <= d <= high for d in delays) and len(delays) == 50
    assert policy.delay(0, 2.5, rng) >= 2.5  # Retry-After, capped by max_delay
    unavailable = MetricsApiUnavailable("x", status=503)
    assert policy.next_delay(unavailable, attempt=0, elapsed_seconds=0, rng=rng) is not None
    assert policy.next_delay(unavailable, attempt=0, elapsed_seconds=4.6, rng=rng) is None
    assert policy.next_delay(unavailable, attempt=3, elapsed_seconds=0, rng=rng) is None


def test_what_is_retried() -> None:
    assert retryable(MetricsApiUnavailable("x"))
    assert retryable(MetricsApiTimeout("x"))
    assert not retryable(MetricsApiTLSError("x"))
    assert not retryable(MetricsApiForbidden("x"))
    assert not retryable(MetricsApiNotFound("x"))
    assert not retryable(MetricsApiUnauthorized("x"))
    assert retryable(MetricsApiUnauthorized("x"), credentials_refreshable=True)

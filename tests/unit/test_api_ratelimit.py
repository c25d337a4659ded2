"""The per-client token bucket, on a clock the test moves."""

from __future__ import annotations

from recorder.api.ratelimit import RateLimiter


def test_a_client_gets_its_burst_then_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == 1  # Retry-After: whole seconds, at least one
    assert limiter.take("b") is None  # every client has its own bucket
    now[0] = 0.5  # one more request's worth at 2 a second
    assert limiter.take("a") is None
    assert limiter.take("a") == 1
    now[0] = 100.0
    assert [limiter.take("a") for _ in range(4)] == [None, None, None, 1]  # never past burst


def test_a_slow_rate_says_how_long_to_wait() -> None:
    limiter = RateLimiter(0.1, 1, clock=lambda: 0.0)
    assert limiter.take("a") is None
    assert limiter.take("a") == 10


def test_the_clients_remembered_are_bounded() -> None:
    limiter = RateLimiter(1.0, 1, max_clients=2, clock=lambda: 0.0)
    for client in ("a", "b", "c"):
        assert limiter.take(client) is None
    assert limiter.take("a") is None  # forgotten: it starts with a full bucket again
    assert limiter.take("c") == 1


def test_exhausted_looks_without_counting() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 1, clock=lambda: now[0])
    assert not limiter.exhausted("a")  # never seen
    assert limiter.take("a") is None
    assert limiter.exhausted("a") and limiter.exhausted("a")
    now[0] = 1.0
    assert not limiter.exhausted("a")
    assert limiter.take("a") is None

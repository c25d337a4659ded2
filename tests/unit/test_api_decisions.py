"""The decision cache: answers kept for their own time, one call in flight per key, bounded."""

from __future__ import annotations

import asyncio

from recorder.api.decisions import DecisionCache


def test_answers_are_kept_for_their_time_and_shared_while_in_flight() -> None:
    now = [0.0]
    cache: DecisionCache[bool] = DecisionCache(
        lambda allowed: 30.0 if allowed else 5.0, clock=lambda: now[0]
    )
    calls: list[str] = []

    async def decide(key: str, answer: bool) -> bool:
        calls.append(key)
        await asyncio.sleep(0.01)
        return answer

    async def scenario() -> None:
        answers = await asyncio.gather(
            *(cache.get("yes", lambda: decide("yes", True)) for _ in range(5))
        )
        assert answers == [True] * 5 and calls == ["yes"]
        assert await cache.get("no", lambda: decide("no", False)) is False
        now[0] = 10.0  # the denial is stale, the allowance is not
        assert await cache.get("yes", lambda: decide("yes", True)) is True
        assert await cache.get("no", lambda: decide("no", False)) is False
        assert calls == ["yes", "no", "no"]

    asyncio.run(scenario())


def test_errors_reach_every_waiter_and_are_not_kept() -> None:
    cache: DecisionCache[bool] = DecisionCache(lambda _: 30.0)

    async def failing() -> bool:
        await asyncio.sleep(0.01)
        raise RuntimeError("API server down")

    async def scenario() -> None:
        results = await asyncio.gather(
            *(cache.get("k", failing) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert len(cache) == 0

        async def fine() -> bool:
            return True

        assert await cache.get("k", fine) is True

    asyncio.run(scenario())


def test_the_least_recently_used_answers_go_first() -> None:
    cache: DecisionCache[int] = DecisionCache(lambda _: 30.0, max_entries=2)

    async def scenario() -> None:
        for key in range(3):

            async def value(k: int = key) -> int:
                return k

            await cache.get(key, value)
        assert len(cache) == 2

        async def recomputed() -> int:
            return -1

        assert await cache.get(0, recomputed) == -1  # 0 was dropped
        assert await cache.get(2, recomputed) == 2

    asyncio.run(scenario())


def test_a_cancelled_decider_lets_a_waiter_decide() -> None:
    cache: DecisionCache[bool] = DecisionCache(lambda _: 30.0)

    async def scenario() -> None:
        gate = asyncio.Event()

        async def slow() -> bool:
            gate.set()
            await asyncio.sleep(10)
            return False

        async def quick() -> bool:
            return True

        first = asyncio.create_task(cache.get("k", slow))
        await gate.wait()
        second = asyncio.create_task(cache.get("k", quick))
        await asyncio.sleep(0)
        first.cancel()
        assert await second is True

    asyncio.run(scenario())

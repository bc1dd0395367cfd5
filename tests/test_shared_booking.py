"""Booked slots in the shared limiter, against a real Valkey/Redis: order, cost, cancellation, restarts.

Each ``SharedLimiter`` here has its own connection and shares nothing with the others but Redis, as
separate processes would.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cascade_async._ratelimit import Priority, RateLimit, make_limiter
from cascade_async._shared_limit import SharedLimiter
from cascade_async._shared_scripts import ACQUIRE

from .redis_support import RedisServer, require_server

BULK, INTERACTIVE = Priority.BULK, Priority.INTERACTIVE


def limiters(url: str, n: int, **kw: Any) -> list[SharedLimiter]:
    account = hashlib.sha256(f"api-key-{uuid.uuid4().hex}".encode()).hexdigest()  # a fresh key per test
    made = [make_limiter(RateLimit(redis_url=url, **kw), batch_size=1, credential_hash=account) for _ in range(n)]
    assert all(isinstance(m, SharedLimiter) for m in made)
    return made  # type: ignore[return-value]


def count_calls(limiter: SharedLimiter, answered: asyncio.Event | None = None) -> list[int]:
    """Counts the acquire script's answers on ``limiter``; sets ``answered`` at each."""
    calls = [0]
    real: Callable[..., Awaitable[Any]] = limiter._acquire_script

    async def counted(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        calls[0] += 1
        if answered is not None:
            answered.set()
        return answer

    limiter._acquire_script = counted
    return calls


async def close(*made: SharedLimiter) -> None:
    for m in made:
        await m.aclose()


async def test_waiters_in_different_processes_are_served_in_booking_order_one_slot_apart(
    valkey: RedisServer,
) -> None:
    made = limiters(valkey.url, 4, requests_per_second=20, burst=1, interactive_reserve=0, headroom=0)
    try:
        await made[0].acquire(1, priority=BULK)  # the burst: the next slot is 50 ms away
        done: list[tuple[int, float]] = []

        async def one(i: int) -> None:
            await made[i].acquire(1, priority=BULK)
            done.append((i, time.monotonic()))

        answered = [asyncio.Event() for _ in made]
        calls = [count_calls(m, e) for m, e in zip(made, answered, strict=True)]
        tasks = []
        for i in (3, 1, 0, 2):  # booking order, not limiter order
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.wait_for(answered[i].wait(), 10)  # booked before the next one books
        await asyncio.gather(*tasks)
        assert [i for i, _ in done] == [3, 1, 0, 2]
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(done)]
        assert all(0.035 < g < 0.07 for g in gaps), gaps  # one token (50 ms) apart, not all at once
        assert [c[0] for c in calls] == [1, 1, 1, 1]  # booked once each, no asking again
    finally:
        await close(*made)


@pytest.mark.parametrize("k", [1, 4])
async def test_a_saturated_bulk_acquisition_costs_one_script_call_whatever_the_number_of_processes(
    valkey: RedisServer, k: int
) -> None:
    made = limiters(valkey.url, k, requests_per_second=100, burst=5, interactive_reserve=2, headroom=0)
    calls = [count_calls(m) for m in made]
    acquired = 0

    async def job(limiter: SharedLimiter, n: int) -> None:
        nonlocal acquired
        for _ in range(n):
            await limiter.acquire(1, priority=BULK)
            acquired += 1

    try:
        started = time.monotonic()
        await asyncio.gather(*(job(m, 40 // k) for m in made))
        elapsed = time.monotonic() - started
        assert acquired == 40
        assert 0.3 < elapsed < 0.7  # 3 at once (burst 5 less the reserve of 2), then 37 at 100/s
        assert sum(c[0] for c in calls) == acquired  # no waiter asks twice: polling would cost about k each
    finally:
        await close(*made)


async def test_a_cancelled_waiter_gives_its_slot_back(valkey: RedisServer) -> None:
    holder, other = limiters(valkey.url, 2, requests_per_second=2, burst=1, interactive_reserve=0, headroom=0)
    try:
        await holder.acquire(1, priority=BULK)
        booked = asyncio.create_task(holder.acquire(1, priority=BULK))  # slot at 0.5 s
        await asyncio.sleep(0.05)
        booked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await booked
        await asyncio.sleep(0.05)  # the release reaches Redis
        started = time.monotonic()
        await other.acquire(1, priority=BULK)
        assert time.monotonic() - started < 0.45  # the freed slot at 0.5 s, not the next one at 1 s
    finally:
        await close(holder, other)


async def test_interactive_sends_go_ahead_of_every_bulk_booking_until_the_reserve_is_spent(
    valkey: RedisServer,
) -> None:
    *bulk, web = limiters(valkey.url, 4, requests_per_second=10, burst=4, interactive_reserve=2, headroom=0)
    try:
        await bulk[0].acquire(1, priority=BULK)
        await bulk[0].acquire(1, priority=BULK)  # down to the reserve
        waiting = [asyncio.create_task(b.acquire(1, priority=BULK)) for b in bulk]  # book 0.1, 0.2, 0.3 s
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await web.acquire(1, priority=INTERACTIVE)
        await web.acquire(1, priority=INTERACTIVE)
        assert time.monotonic() - started < 0.05  # the reserve: ahead of three booked bulk slots
        assert not any(w.done() for w in waiting)
        await web.acquire(1, priority=INTERACTIVE)  # the reserve spent: the first slot no booking claims (0.4 s)
        assert 0.3 < time.monotonic() - started < 0.45
        await asyncio.gather(*waiting)
    finally:
        await close(*bulk, web)


async def test_a_bucket_lost_with_a_redis_restart_starts_empty_for_processes_that_were_sending() -> None:
    own = RedisServer(require_server())
    own.start()
    (sender,) = limiters(own.url, 1, requests_per_second=10, burst=10, interactive_reserve=0, headroom=0)
    try:
        for _ in range(10):
            await sender.acquire(1, priority=BULK)  # the burst, spent
        own.kill()
        for _ in range(30):  # the heartbeat notices
            await asyncio.sleep(0.1)
            if not sender.shared:
                break
        own.start()  # empty: the bucket is gone
        for _ in range(40):
            await asyncio.sleep(0.1)
            if sender.shared:
                break
        assert sender.shared
        started = time.monotonic()
        for _ in range(3):
            await sender.acquire(1, priority=BULK)
        assert time.monotonic() - started > 0.25  # refilled at 10/s from empty, not a fresh burst of 10
    finally:
        await close(sender)
        own.kill()


async def test_a_reserve_larger_than_a_stricter_stored_burst_never_lets_more_than_the_burst_through(
    valkey: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(valkey.url)
    script = client.register_script(ACQUIRE)
    key = f"cascade:rl:test-{uuid.uuid4().hex}"
    small = [0.1, 4, 0, 0, 0.05, 60_000, 1]  # one token per 10 s, burst 4
    large = [0.1, 150, 0, 0, 0.05, 60_000, 1]  # another process: burst 150, reserve 100
    try:
        assert (await script(keys=[key], args=[*small, 1, 0, 0]))[:2] == [1, 0]
        waits = [int((await script(keys=[key], args=[*large, 1, 1, 100]))[1]) for _ in range(5)]
        assert [w == 0 for w in waits] == [True, True, True, False, False]  # 1 + 3 at once: the burst of 4
    finally:
        await client.aclose()

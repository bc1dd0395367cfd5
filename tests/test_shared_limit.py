"""The shared limiter against a real Valkey/Redis server started by the suite (see ``redis_support``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from cascade_async._ratelimit import (
    LimiterEvent,
    Priority,
    RateLimit,
    SharedLimitFallback,
    SharedLimitRecovered,
    credential_key,
    make_limiter,
)
from cascade_async._shared_limit import SharedLimiter
from cascade_async._shared_scripts import ACQUIRE

from .redis_support import PASSWORD, RedisServer, free_port, require_server

BULK, INTERACTIVE = Priority.BULK, Priority.INTERACTIVE


@pytest.fixture(scope="session")
def server() -> Iterator[RedisServer]:
    s = RedisServer(require_server())
    s.start()
    yield s
    s.kill()


@pytest.fixture
def secret() -> str:
    return f"api-key-{uuid.uuid4().hex}"  # a fresh account, so a fresh key, per test


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, decode_responses=True)
    yield c
    await c.aclose()


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def shared(url: str, secret: str, *, batch_size: int = 1, events: list[LimiterEvent] | None = None, **kw: Any) -> Any:
    limiter = make_limiter(
        RateLimit(redis_url=url, **kw),
        batch_size=batch_size,
        credential_hash=sha(secret),
        on_event=events.append if events is not None else None,
    )
    assert isinstance(limiter, SharedLimiter)
    return limiter


# --- several OS processes on one key ----------------------------------------------------------

CHILD = r"""
import asyncio, json, sys, time
from cascade_async._ratelimit import Priority, RateLimit, make_limiter

url, chash, start, duration = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

async def main():
    limit = RateLimit(requests_per_second=50, burst=10, headroom=0, interactive_reserve=0, redis_url=url)
    limiter = make_limiter(limit, batch_size=1, credential_hash=chash)
    await asyncio.sleep(max(0.0, start - time.time()))
    stamps = []

    async def worker():
        while time.time() < start + duration:
            await limiter.acquire(1, priority=Priority.BULK)
            stamps.append(time.time())

    await asyncio.gather(*(worker() for _ in range(4)))
    await limiter.aclose()
    print(json.dumps([t for t in stamps if t < start + duration]))

asyncio.run(main())
"""


def test_processes_sharing_a_key_stay_within_the_rate(server: RedisServer, secret: str) -> None:
    # A generous head start: on a loaded machine a child may take seconds to import.
    start, duration = time.time() + 4.0, 2.0
    args = [server.url, sha(secret), str(start), str(duration)]
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    per_process = [json.loads(c.communicate(timeout=30)[0]) for c in children]
    assert all(c.returncode == 0 for c in children)
    stamps = sorted(t for p in per_process for t in p)
    assert all(len(p) > 10 for p in per_process)  # every process got a fair part
    # 10 of burst, then 50/s: about 110 in two seconds, three processes together (the bound that
    # matters is the upper one; a starved, loaded machine may grant a few less)
    assert 90 <= len(stamps) <= 112
    after_burst = [t for t in stamps if t >= start + 0.2]
    windows = [sum(1 for x in after_burst if s <= x < s + 1.0) for s in after_burst]
    assert max(windows) <= 51


# --- interactive before bulk, across processes -------------------------------------------------


async def test_script_never_makes_interactive_wait_while_the_reserve_holds(client: aioredis.Redis) -> None:
    """The script's own answers: bulk books slots that leave the reserve; interactive goes ahead of them."""
    script = client.register_script(ACQUIRE)
    key = credential_key(f"k-{uuid.uuid4().hex}")
    # one token per 10 s, so the refill during the test is negligible: burst 10, reserve 3, a fresh bucket
    settings = [0.1, 10, 0, 0, 0.05, 60_000, 1]

    async def acquire(priority: Priority) -> tuple[int, float]:
        answer = await script(keys=[key], args=[*settings, 1, int(priority is INTERACTIVE), 3])
        return int(answer[0]), round(int(answer[1]) / 1e6)  # granted, seconds to wait

    assert [await acquire(BULK) for _ in range(7)] == [(1, 0)] * 7
    # the bucket is down to the reserve: bulk books the next slots, one token (10 s) apart, no re-asking
    assert [await acquire(BULK) for _ in range(2)] == [(1, 10), (1, 20)]
    # the reserve holds although bulk booked the future: interactive goes at once, ahead of those slots
    assert [await acquire(INTERACTIVE) for _ in range(3)] == [(1, 0)] * 3
    # the reserve spent: the next interactive send waits for the first token no booking claims (at 30 s:
    # three refilled, two booked by bulk), not behind every bulk booking
    assert await acquire(INTERACTIVE) == (1, 30)
    # bulk books behind everything, within the horizon (burst - reserve) / rate = 70 s
    assert await acquire(BULK) == (1, 70)
    # beyond it bulk books nothing and is told when to ask once more
    assert await acquire(BULK) == (0, 10)


async def test_interactive_goes_ahead_of_a_waiting_bulk_process(server: RedisServer, secret: str) -> None:
    bulk = shared(server.url, secret, requests_per_second=2, burst=5, interactive_reserve=2, headroom=0)
    web = shared(server.url, secret, requests_per_second=2, burst=5, interactive_reserve=2, headroom=0)
    try:
        for _ in range(3):
            await bulk.acquire(1, priority=BULK)
        waiting = asyncio.create_task(bulk.acquire(1, priority=BULK))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        await web.acquire(1, priority=INTERACTIVE)
        await web.acquire(1, priority=INTERACTIVE)
        assert time.monotonic() - started < 0.1
        assert not waiting.done()
        waiting.cancel()
    finally:
        await bulk.aclose()
        await web.aclose()


# --- 429: the penalty box -------------------------------------------------------------------------

PENALIZER = r"""
import asyncio, sys, time
from cascade_async._ratelimit import RateLimit, make_limiter

async def main():
    limiter = make_limiter(RateLimit(redis_url=sys.argv[1]), batch_size=1, credential_hash=sys.argv[2])
    limiter.penalize(1.0)
    await limiter.aclose()  # waits for the penalty to reach Redis
    print(time.time())

asyncio.run(main())
"""


async def test_a_429_in_one_process_pauses_another(server: RedisServer, secret: str, client: aioredis.Redis) -> None:
    limiter = shared(server.url, secret)
    try:
        await limiter.acquire(1, priority=INTERACTIVE)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PENALIZER, server.url, sha(secret), stdout=subprocess.PIPE
        )
        penalized_at = float((await proc.communicate())[0])
        await limiter.acquire(1, priority=INTERACTIVE)
        assert 0.85 < time.time() - penalized_at < 1.1
        assert float(await client.hget(credential_key(secret), "low") or "nan") == pytest.approx(0.7)
    finally:
        await limiter.aclose()


# --- Redis failure is not message failure ---------------------------------------------------------


async def test_redis_killed_mid_job_falls_back_then_recovers(caplog: pytest.LogCaptureFixture, secret: str) -> None:
    own = RedisServer(require_server())
    own.start()
    events: list[LimiterEvent] = []
    limiters = [shared(own.url, secret, events=events, requests_per_second=200) for _ in range(2)]
    acquired = 0
    stop = False

    async def job(limiter: SharedLimiter, priority: Priority) -> None:
        nonlocal acquired
        while not stop:
            await limiter.acquire(1, priority=priority)
            acquired += 1
            await asyncio.sleep(0.005)

    try:
        tasks = [asyncio.create_task(job(lim, p)) for lim in limiters for p in Priority]
        await asyncio.sleep(1.2)  # a heartbeat each after both have started
        assert all(lim.shared and lim.live_processes == 2 for lim in limiters)
        own.kill()
        before = acquired
        await asyncio.sleep(1.5)
        assert acquired > before + 100  # sending went on
        assert not any(lim.shared for lim in limiters)
        fallbacks = [e for e in events if isinstance(e, SharedLimitFallback)]
        assert len(fallbacks) == 2
        assert {e.share for e in fallbacks} == {0.5}  # 1/K, K = 2 live processes
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # one per limiter, not one per acquisition
        assert all(PASSWORD not in r.getMessage() and ":***@" in r.getMessage() for r in warnings)

        own.start()
        for _ in range(40):
            await asyncio.sleep(0.1)
            if all(lim.shared for lim in limiters):
                break
        assert all(lim.shared for lim in limiters)
        assert sum(isinstance(e, SharedLimitRecovered) for e in events) == 2
        before = acquired
        await asyncio.sleep(0.2)
        assert acquired > before
        stop = True
        await asyncio.gather(*tasks)
    finally:
        for lim in limiters:
            await lim.aclose()
        own.kill()


async def test_unreachable_at_start_falls_back_at_the_configured_share(secret: str) -> None:
    events: list[LimiterEvent] = []
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    limiter = shared(url, secret, events=events, fallback_share=0.25)
    try:
        await limiter.acquire(1, priority=BULK)
        await limiter.acquire(1, priority=INTERACTIVE)
        limiter.penalize(None)
        limiter.on_success()
        assert not limiter.shared
        assert events == [SharedLimitFallback(key=credential_key(secret), reason="ConnectionError", share=0.25)]
    finally:
        await limiter.aclose()


async def test_a_redis_that_never_answers_is_a_timeout_and_a_fallback(secret: str) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads, never answers
        writer.close()

    blackhole = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = blackhole.sockets[0].getsockname()[1]
    limiter = shared(f"redis://127.0.0.1:{port}/0", secret, redis_timeout=0.1)
    try:
        started = time.monotonic()
        await limiter.acquire(1, priority=INTERACTIVE)
        assert time.monotonic() - started < 0.5
        assert not limiter.shared
    finally:
        await limiter.aclose()
        blackhole.close()


# --- keys, values and settings ----------------------------------------------------------------------


async def test_no_credential_in_redis_keys_or_values(server: RedisServer, secret: str, client: aioredis.Redis) -> None:
    limiter = shared(server.url, secret, messages_per_second=1000, message_burst=1000)
    key = credential_key(secret)
    try:
        await limiter.acquire(1, priority=BULK)
        await limiter.acquire(1, priority=INTERACTIVE)
        limiter.penalize(0.01)
        await asyncio.sleep(0.05)
        assert PASSWORD not in repr(limiter)
        keys = [k async for k in client.scan_iter(match=key + "*")]
        assert sorted(keys) == [key, key + ":procs"]
        stored: list[str] = [*keys]
        for k in keys:
            if await client.type(k) == "hash":
                stored += [str(x) for pair in (await client.hgetall(k)).items() for x in pair]
            else:
                stored += [str(x) for x in await client.zrange(k, 0, -1)]
    finally:
        await limiter.aclose()
    assert len(stored) > 10
    for text in stored:
        assert secret not in text
        assert PASSWORD not in text


async def test_a_differently_configured_process_warns_and_the_stricter_setting_wins(
    server: RedisServer, secret: str, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a = shared(server.url, secret, requests_per_second=100, burst=150, headroom=0)
    b = shared(server.url, secret, requests_per_second=50, burst=200, headroom=0)
    try:
        await a.acquire(1)
        assert not caplog.records
        await b.acquire(1)
        await b.acquire(1)
        await a.acquire(1)
        stored = await client.hgetall(credential_key(secret))
        assert (float(stored["rate"]), float(stored["burst"])) == (50.0, 150.0)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # once per process: b, then a on its next acquisition
        assert all("stricter 50 req/s burst 150" in w for w in warnings)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize(("headroom", "stored_rate"), [(None, 98.0), (0.01, 99.0), (0.0, 100.0)])
async def test_a_shared_limit_holds_back_two_percent_unless_told_otherwise(
    server: RedisServer, secret: str, client: aioredis.Redis, headroom: float | None, stored_rate: float
) -> None:
    limiter = shared(server.url, secret, requests_per_second=100, burst=150, headroom=headroom)
    try:
        await limiter.acquire(1)
        stored = await client.hgetall(credential_key(secret))
        assert float(stored["rate"]) == pytest.approx(stored_rate)
    finally:
        await limiter.aclose()


def test_one_process_holds_back_one_percent_and_a_shared_limit_two_by_default() -> None:
    assert RateLimit().held_back == 0.01
    assert RateLimit(redis_url="redis://localhost:6379/0").held_back == 0.02
    assert RateLimit(redis_url="redis://localhost:6379/0", headroom=0.05).held_back == 0.05
    assert RateLimit(headroom=0).held_back == 0


def test_a_missing_server_skips_locally_but_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import redis_support

    monkeypatch.setattr(redis_support, "find_server", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        redis_support.require_server()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        redis_support.require_server()


async def test_the_message_bucket_is_shared_too(server: RedisServer, secret: str) -> None:
    plain = shared(server.url, secret, headroom=0)
    counted = shared(server.url, secret, batch_size=50, messages_per_second=100, message_burst=100, headroom=0)
    try:
        for _ in range(3):
            await plain.acquire(50)  # no message bucket yet
        started = time.monotonic()
        await counted.acquire(50)
        await counted.acquire(50)
        assert time.monotonic() - started < 0.1  # the burst of 100 messages, full
        await plain.acquire(50)  # the stricter setting now counts messages for everyone: 50 more at 100/s
        assert 0.4 < time.monotonic() - started < 0.65
    finally:
        await plain.aclose()
        await counted.aclose()

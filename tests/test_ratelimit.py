"""The local limiter and the rate-limit config, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from cascade_async._ratelimit import (
    Adaptive,
    Limiter,
    Priority,
    RateLimit,
    RateLimiter,
    credential_key,
    make_limiter,
    pause_for,
    redact_url,
)

from .support import run_virtual

BULK, INTERACTIVE = Priority.BULK, Priority.INTERACTIVE


def now() -> float:
    return asyncio.get_running_loop().time()


# --- config, redaction, keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        pytest.param("redis://localhost:6379/0", "redis://localhost:6379/0", id="no-password"),
        pytest.param("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0", id="password-only"),
        pytest.param("rediss://user:s3cret@redis:6380", "rediss://user:***@redis:6380", id="user-and-password"),
        pytest.param("redis://s3cret@redis", "redis://***@redis", id="bare-userinfo"),
        pytest.param("redis://:p%40ss@redis/1", "redis://:***@redis/1", id="escaped-password"),
        pytest.param("redis://redis/0?password=s3cret&db=2", "redis://redis/0?password=***&db=2", id="query-password"),
        pytest.param("unix://:s3cret@/tmp/redis.sock", "unix://:***@/tmp/redis.sock", id="unix-socket"),
        pytest.param("redis://:s3cret#x@redis:1/0", "redis://:***@redis:1/0", id="raw-hash-in-password"),
        pytest.param("redis://:s3cret/x@redis:1/0", "redis://:***@redis:1/0", id="raw-slash-in-password"),
        pytest.param("redis://:s3cret?x@redis:1/0", "redis://:***@redis:1/0", id="raw-question-mark-in-password"),
    ],
)
def test_redact_url_hides_passwords(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert "s3cret" not in redact_url(url)


def test_rate_limit_repr_redacts_the_redis_password() -> None:
    limit = RateLimit(redis_url="redis://:s3cret@redis:6379/0")
    assert "s3cret" not in repr(limit)
    assert "redis://:***@redis:6379/0" in repr(limit)
    assert "s3cret" not in str(limit.__rich_repr__())
    assert limit.redis_url == "redis://:s3cret@redis:6379/0"  # the value itself is intact


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"interactive_reserve": 150}, "interactive_reserve", id="reserve-equal-to-burst"),
        pytest.param({"interactive_reserve": -1}, "interactive_reserve", id="negative-reserve"),
        pytest.param({"fallback_share": 0}, "fallback_share", id="zero-share"),
        pytest.param({"fallback_share": 1.5}, "fallback_share", id="share-above-one"),
        pytest.param({"redis_timeout": 0}, "redis_timeout", id="zero-timeout"),
        pytest.param({"key": ""}, "key", id="empty-key"),
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_default_reserve_is_a_tenth_of_the_burst() -> None:
    assert RateLimit().reserve == 15
    assert RateLimit(burst=5).reserve == 0  # a tiny bucket keeps nothing back
    assert RateLimit(requests_per_second=40, burst=None).reserve == 4


def test_credential_key_hashes_the_secret() -> None:
    key = credential_key("api-key-123")
    assert key.startswith("cascade:rl:")
    assert len(key) == len("cascade:rl:") + 64
    assert "api-key-123" not in key


def test_make_limiter_is_local_without_redis() -> None:
    limiter: RateLimiter = make_limiter(RateLimit(), batch_size=100, credential_hash="0" * 64)
    assert isinstance(limiter, Limiter)


def test_make_limiter_refuses_a_raw_credential_as_the_hash() -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        make_limiter(RateLimit(redis_url="redis://localhost"), batch_size=100, credential_hash="api-key-123")


def test_message_bucket_smaller_than_a_batch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="message_burst"):
        Limiter(RateLimit(messages_per_second=10, message_burst=10), batch_size=500)


# --- priority and the reserve -----------------------------------------------------------------


def test_no_interactive_acquisition_waits_while_the_reserve_holds() -> None:
    """Bulk saturates the bucket; interactive sends, fewer than the reserve per refill, never wait."""
    limit = RateLimit(requests_per_second=100, burst=150, headroom=0)  # reserve 15
    waits: list[float] = []
    bulk_sent = 0

    async def main() -> None:
        limiter = Limiter(limit, batch_size=100)

        async def bulk() -> None:
            nonlocal bulk_sent
            while now() < 5.0:
                await limiter.acquire(100, priority=BULK)
                bulk_sent += 1

        async def interactive() -> None:
            await asyncio.sleep(0.5)  # bulk has drained the burst down to the reserve
            while now() < 5.0:
                for _ in range(3):  # a small burst each time, well inside the reserve
                    start = now()
                    await limiter.acquire(1, priority=INTERACTIVE)
                    waits.append(now() - start)
                await asyncio.sleep(0.15)

        await asyncio.gather(*(bulk() for _ in range(20)), interactive())

    run_virtual(main())
    assert len(waits) > 80
    assert max(waits) == 0.0
    # bulk still used the rest: 135 of burst, then 100/s less the interactive share
    assert bulk_sent + len(waits) >= 135 + 100 * 4.5 - 2


def test_interactive_burst_beyond_the_reserve_waits_but_goes_before_bulk() -> None:
    limit = RateLimit(requests_per_second=100, burst=20, headroom=0, interactive_reserve=5)
    order: list[str] = []

    async def main() -> None:
        limiter = Limiter(limit, batch_size=1)
        for _ in range(15):  # bulk drains down to the reserve
            await limiter.acquire(1, priority=BULK)
        assert now() < 1e-6

        async def one(name: str, priority: Priority) -> None:
            await limiter.acquire(1, priority=priority)
            order.append(f"{name}@{now():.2f}")

        bulk_waiters = [asyncio.create_task(one(f"b{i}", BULK)) for i in range(3)]
        await asyncio.sleep(0)
        interactive = [asyncio.create_task(one(f"i{i}", INTERACTIVE)) for i in range(7)]
        await asyncio.gather(*bulk_waiters, *interactive)

    run_virtual(main())
    # five interactive at once from the reserve, two more at the refill rate, then bulk
    assert order == [
        *(f"i{i}@0.00" for i in range(5)),
        "i5@0.01",
        "i6@0.02",
        # bulk needs the bucket back above the reserve: 5 + 1 tokens after 0.02 s of debt
        "b0@0.08",
        "b1@0.09",
        "b2@0.10",
    ]


def test_bulk_is_first_come_first_served() -> None:
    limit = RateLimit(requests_per_second=10, burst=1, headroom=0, messages_per_second=100, message_burst=100)
    order: list[int] = []

    async def main() -> None:
        limiter = Limiter(limit, batch_size=100)

        async def one(i: int, size: int) -> None:
            await limiter.acquire(size, priority=BULK)
            order.append(i)

        await asyncio.gather(one(0, 100), one(1, 100), one(2, 1), one(3, 1))

    run_virtual(main())
    assert order == [0, 1, 2, 3]  # small acquisitions do not overtake a waiting large one


def test_a_cancelled_waiter_does_not_stall_the_queue() -> None:
    limit = RateLimit(requests_per_second=10, burst=1, headroom=0)

    async def main() -> float:
        limiter = Limiter(limit, batch_size=1)
        await limiter.acquire(1)
        first = asyncio.create_task(limiter.acquire(1))
        second = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.01)
        first.cancel()
        await second
        return now()

    assert run_virtual(main()) == pytest.approx(0.1)


# --- 429: the account pause and the adaptive rate ----------------------------------------------


def test_penalize_pauses_every_priority_then_refills_from_empty() -> None:
    limit = RateLimit(requests_per_second=100, burst=150, headroom=0)
    times: list[float] = []

    async def main() -> None:
        limiter = Limiter(limit, batch_size=1)
        await limiter.acquire(1)
        limiter.penalize(2.0)
        await limiter.acquire(1, priority=INTERACTIVE)
        times.append(now())
        limiter.on_success()
        for _ in range(3):
            await limiter.acquire(1, priority=INTERACTIVE)
            times.append(now())

    run_virtual(main())
    # the rate after a 429 is 70 %: one request per 1/70 s, no burst after the pause
    assert times == pytest.approx([2.0, 2.0 + 1 / 70, 2.0 + 2 / 70, 2.0 + 3 / 70], abs=1e-4)


def test_penalize_wakes_no_waiter_early() -> None:
    limit = RateLimit(requests_per_second=100, burst=1, headroom=0)

    async def main() -> float:
        limiter = Limiter(limit, batch_size=1)
        await limiter.acquire(1)
        waiter = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.001)
        limiter.penalize(3.0)
        await waiter
        return now()

    assert run_virtual(main()) == pytest.approx(3.001)


@pytest.mark.parametrize(
    ("retry_after", "streak", "pause"),
    [
        pytest.param(2.5, 0, 2.5, id="retry-after"),
        pytest.param(2.5, 4, 2.5, id="retry-after-ignores-streak"),
        pytest.param(3600.0, 0, 60.0, id="retry-after-capped"),
        pytest.param(None, 0, 1.0, id="backoff-first"),
        pytest.param(None, 3, 8.0, id="backoff-doubles"),
        pytest.param(None, 10, 60.0, id="backoff-capped"),
    ],
)
def test_pause_for(retry_after: float | None, streak: int, pause: float) -> None:
    assert pause_for(retry_after, streak) == pause


def test_adaptive_rate_lowers_once_per_pause_and_recovers_linearly() -> None:
    a = Adaptive()
    assert a.factor(0.0) == 1.0
    assert a.penalize(10.0, 1.0) == 11.0
    assert a.factor(10.5) == pytest.approx(0.7)
    a.penalize(10.5, 1.0)  # answered during the pause: extends it, lowers nothing
    assert a.paused_until == 11.5
    assert a.factor(11.0) == pytest.approx(0.7)
    assert a.factor(14.0) == pytest.approx(0.85)  # 5 % of the rate per second after the pause
    assert a.factor(20.0) == 1.0
    for t in range(30, 50):
        a.penalize(float(t), 0.5)
    assert a.factor(49.5) == pytest.approx(0.1)  # the floor


def test_backoff_streak_resets_on_success() -> None:
    async def main() -> list[float]:
        limiter = Limiter(RateLimit(headroom=0), batch_size=1)
        ends = []
        for success in (False, False, True, False):
            start = now()
            limiter.penalize(None)
            await limiter.acquire(1, priority=INTERACTIVE)
            ends.append(round(now() - start, 3))
            if success:
                limiter.on_success()
        return ends

    assert run_virtual(main()) == [1.0, 2.0, 4.0, 1.0]


def test_429s_answered_during_a_pause_lengthen_the_backoff_once() -> None:
    a = Adaptive()
    assert a.penalize(0.0, None) == 1.0
    for _ in range(7):  # the other batches that were in flight
        a.penalize(0.01, None)
    assert a.paused_until == pytest.approx(1.01)  # not 2 ** 7 seconds
    assert a.penalize(1.5, None) == 3.5  # the next pause, after it, doubles

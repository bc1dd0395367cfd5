"""A 429 is back-pressure, not failure: the engine and the limiter on a virtual clock (issue #12)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from cascade_async import (
    BatchSent,
    CascadeClient,
    Event,
    Message,
    RateLimit,
    RateLimitError,
    RawResponse,
    Result,
    RetryPolicy,
    RetryScheduled,
    Status,
)

from .support import FakeTransport, error, msg, ok_for, run_virtual

LIMIT = RateLimit(requests_per_second=100, burst=150)


def storm(n429: int, *, retry_after: str | None = "1") -> FakeTransport:
    """The first ``n429`` answers are 429s (with ``Retry-After`` unless None), the rest 200s."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    answered = 0

    def respond(messages: list[dict[str, Any]], n: int) -> RawResponse:
        nonlocal answered
        answered += 1
        return error(429, **headers) if answered <= n429 else ok_for(messages)

    return FakeTransport(respond, latency=0.02)


def make(transport: FakeTransport, **kw: Any) -> CascadeClient:
    return CascadeClient(api_key="k", transport=transport, **kw)


@pytest.mark.parametrize(
    "retry_after", [pytest.param("1", id="with-retry-after"), pytest.param(None, id="without-retry-after")]
)
def test_a_429_storm_fails_no_bulk_message_and_counts_no_attempt(retry_after: str | None) -> None:
    t = storm(40, retry_after=retry_after)
    events: list[Event] = []

    async def main() -> list[Result]:
        async with make(t, rate_limit=LIMIT, batch_size=50, on_event=events.append) as c:
            report = await c.send_many([msg(i) for i in range(2000)])
            return [report[tid] for tid in report]

    results = run_virtual(main())
    assert len(results) == 2000
    assert all(r.status is Status.ACCEPTED for r in results)
    assert {r.attempts for r in results} == {1}  # 429s are not attempts
    assert sum(1 for e in events if isinstance(e, BatchSent) and e.status == 429) == 40
    assert not any(isinstance(e, RetryScheduled) for e in events)  # the retry loop never saw them


def test_a_429_pauses_every_batch_of_the_client_for_retry_after() -> None:
    t = storm(1, retry_after="2")

    async def main() -> None:
        async with make(t, rate_limit=LIMIT, batch_size=10, max_in_flight=4) as c:
            report = await c.send_many([msg(i) for i in range(200)])
            assert len(report.accepted) == 200

    run_virtual(main())
    first_answer = t.calls[0][0] + t.latency  # the 429 arrives here
    later = [at for at, *_ in t.calls[1:] if at > first_answer]
    assert later  # the job went on
    # nothing in between, from any batch; then bulk waits for the interactive reserve to refill
    assert first_answer + 2.0 <= min(later) <= first_answer + 2.5


def test_throttling_past_the_batch_deadline_fails_with_one_attempt_and_says_why() -> None:
    t = FakeTransport(lambda messages, n: error(429, **{"Retry-After": "1"}))

    async def main() -> list[Result]:
        async with make(t, rate_limit=LIMIT, retry=RetryPolicy(deadline=10)) as c:
            return [r async for r in c.stream([msg(1)])]

    (r,) = run_virtual(main())
    assert r.status is Status.FAILED
    assert isinstance(r.error, RateLimitError)
    assert r.attempts == 1  # only the last 429, the one the deadline did not allow to wait out
    assert "deadline" in str(r.error)
    # one request per pause (1 s, and the time bulk takes to refill the interactive reserve) until the deadline
    assert 6 <= len(t.calls) <= 11


def test_without_a_rate_limiter_a_429_is_an_ordinary_retried_attempt() -> None:
    t = storm(1)

    async def main() -> list[Result]:
        async with make(t, rate_limit=None) as c:
            return [r async for r in c.stream([msg(1)])]

    (r,) = run_virtual(main())
    assert r.ok
    assert r.attempts == 2


class Log:
    def __init__(self) -> None:
        self.entries: list[str] = []

    def dispatched(self, batch: Sequence[Message]) -> None:
        self.entries.append("dispatched")

    def not_sent(self, batch: Sequence[Message]) -> None:
        self.entries.append("not_sent")

    def completed(self, results: Sequence[Result]) -> None:
        self.entries.append("completed")


def test_the_recorder_hears_each_429_as_not_sent_and_each_resend_as_dispatched() -> None:
    t = storm(2)
    log = Log()

    async def main() -> None:
        async with make(t, rate_limit=LIMIT) as c:
            [r] = [r async for r in c.stream([msg(1)], recorder=log)]
            assert r.ok

    run_virtual(main())
    assert log.entries == ["dispatched", "not_sent", "dispatched", "not_sent", "dispatched", "completed"]


# --- priority from each way of sending to the limiter ------------------------------------------

TIGHT = RateLimit(requests_per_second=1, burst=10, interactive_reserve=5, headroom=0)


@pytest.mark.parametrize(
    ("priority", "at_once"),
    [
        pytest.param("bulk", 5, id="bulk-leaves-the-reserve"),
        pytest.param("interactive", 10, id="interactive-spends-it"),
    ],
)
def test_stream_priority_decides_whether_the_reserve_is_spent(priority: str, at_once: int) -> None:
    t = FakeTransport()

    async def main() -> None:
        async with (
            make(t, rate_limit=TIGHT, batch_size=1) as c,
            c.stream([msg(i) for i in range(12)], priority=priority) as results,  # type: ignore[arg-type]
        ):
            assert len([r async for r in results]) == 12

    run_virtual(main())
    assert sum(1 for at, *_ in t.calls if at < 0.5) == at_once


@pytest.mark.parametrize("coalesce", [pytest.param(True, id="coalesced"), pytest.param(False, id="one-by-one")])
def test_send_is_interactive_and_passes_a_saturating_bulk_job(coalesce: bool) -> None:
    t = FakeTransport()

    async def main() -> float:
        async with (
            make(t, rate_limit=TIGHT, batch_size=1, coalesce=coalesce) as c,
            c.stream([msg(i) for i in range(30)]) as bulk,
        ):
            it = aiter(bulk)
            for _ in range(5):
                await anext(it)  # the bulk job has spent everything but the reserve
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert (await c.send(msg("otp"))).ok
            return loop.time() - started

    waited = run_virtual(main())
    assert waited < 0.01  # while bulk waits a second per request

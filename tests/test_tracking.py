"""status(), track() and wait_delivered() on a virtual clock, against a scripted status host."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from cascade_async import (
    DEFAULT_STATUS_URL,
    AuthenticationError,
    CascadeClient,
    DeliveryReport,
    DeliveryStatus,
    MessageNotFoundError,
    RateLimit,
    RawResponse,
    Result,
    Status,
)
from cascade_async._tracking import NOT_FOUND_GRACE

from .support import run_virtual

Answer = Callable[[str, int, float], RawResponse]


def status_answer(status: str, **extra: Any) -> RawResponse:
    return RawResponse(200, {}, json.dumps({"deliverystatus": status, **extra}).encode())


def lifecycle(final_after: float = 3.0, outcome: str = "delivered") -> Answer:
    def answer(mid: str, n: int, age: float) -> RawResponse:
        return status_answer(outcome if age >= final_after else "processing", cost=0.05)

    return answer


class StatusHost:
    """A transport that serves GET /bat/message/{id} from ``answer(mid, poll_number, age)``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.polls: list[tuple[float, str]] = []
        self.per_message: collections.Counter[str] = collections.Counter()
        self.urls: list[str] = []
        self.headers: list[Mapping[str, str]] = []

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> RawResponse:
        assert method == "GET"
        now = asyncio.get_running_loop().time()
        mid = url.rsplit("/", 1)[1]
        self.polls.append((now, mid))
        self.urls.append(url)
        self.headers.append(headers)
        self.per_message[mid] += 1
        return self.answer(mid, self.per_message[mid], now)

    async def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> RawResponse:
        raise AssertionError("no POST expected")

    async def aclose(self) -> None:
        pass


def client_for(host: StatusHost, **kw: Any) -> CascadeClient:
    return CascadeClient(api_key="key", transport=host, **kw)


def accepted(i: int) -> Result:
    return Result(tracking_id=f"t{i}", status=Status.ACCEPTED, message_id=f"m{i}")


async def collect(stream: AsyncIterator[DeliveryReport]) -> list[DeliveryReport]:
    return [r async for r in stream]


def test_track_yields_exactly_one_final_report_per_accepted_message_and_skips_the_rest() -> None:
    host = StatusHost(lifecycle(final_after=7.0))
    rejected = Result(tracking_id="bad", status=Status.REJECTED)
    items: list[Any] = [accepted(i) for i in range(50)] + [rejected, "m-plain", ("t-pair", "m-pair")]

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track(items))

    reports = run_virtual(main())
    assert sorted(r.message_id for r in reports) == sorted([f"m{i}" for i in range(50)] + ["m-plain", "m-pair"])
    assert all(r.final and r.status is DeliveryStatus.DELIVERED for r in reports)
    by_id = {r.message_id: r for r in reports}
    assert by_id["m3"].tracking_id == "t3"
    assert by_id["m-pair"].tracking_id == "t-pair"
    assert "bad" not in host.per_message


def test_an_empty_message_id_gets_its_own_report_and_the_other_messages_are_still_tracked() -> None:
    # A blank id (an empty CSV cell) made the status GET raise ValueError, which ended track() with no
    # report for any message.
    host = StatusHost(lifecycle(final_after=2.0))
    items: list[Any] = [accepted(0), "", ("t-blank", "  "), accepted(1)]

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track(items))

    reports = run_virtual(main())
    assert sorted(r.message_id for r in reports) == ["", "  ", "m0", "m1"]
    blank = [r for r in reports if not r.message_id.strip()]
    assert all(not r.final and r.error for r in blank)
    assert {r.tracking_id for r in blank} == {None, "t-blank"}
    assert all(r.final for r in reports if r.message_id.strip())


def test_track_reads_an_async_iterable_of_results() -> None:
    host = StatusHost(lifecycle(final_after=1.0))

    async def source() -> AsyncIterator[Result]:
        for i in range(5):
            await asyncio.sleep(0.5)
            yield accepted(i)

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track(source()))

    assert len(run_virtual(main())) == 5


def test_tracking_many_messages_stays_within_the_data_limit_and_one_poll_per_message_per_second() -> None:
    host = StatusHost(lifecycle(final_after=40.0))
    n = 3000

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track((accepted(i) for i in range(n)), timeout=600, every=1.0))

    reports = run_virtual(main())
    assert len(reports) == n
    times = [t for t, _ in host.polls]
    # a token bucket of 50/s with a burst of 75: no window of w seconds holds more than 75 + 50 w
    for w in (1.0, 5.0, 30.0):
        j = 0
        for i, t in enumerate(times):
            j = max(j, i)
            while j < len(times) and times[j] < t + w:
                j += 1
            assert j - i <= 75 + 50 * w, f"{j - i} polls within {w}s from {t:.2f}s"
    span = times[-1] - times[0]
    assert (len(times) - 75) / span <= 50.0
    last: dict[str, float] = {}
    for t, mid in host.polls:
        if mid in last:
            assert t - last[mid] >= 1.0 - 1e-6, f"{mid} polled twice within {t - last[mid]:.3f}s"
        last[mid] = t


def test_a_message_not_final_at_its_timeout_yields_one_report_with_final_false_and_the_last_status() -> None:
    host = StatusHost(lifecycle(final_after=10_000.0))

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track([accepted(1)], timeout=20.0, every=5.0))

    (report,) = run_virtual(main())
    assert report.final is False
    assert report.status is DeliveryStatus.PROCESSING
    assert report.tracking_id == "t1"
    assert 3 <= host.per_message["m1"] <= 8  # backoff: 0, 5, 12.5 ... and one at the deadline


def test_a_404_right_after_acceptance_means_not_yet() -> None:
    def answer(mid: str, n: int, age: float) -> RawResponse:
        return RawResponse(404, {}, b"{}") if n <= 2 else status_answer("delivered")

    host = StatusHost(answer)

    async def main() -> list[DeliveryReport]:
        async with client_for(host) as client:
            return await collect(client.track([accepted(1)], every=1.0))

    (report,) = run_virtual(main())
    assert report.final
    assert report.delivered


def test_a_404_past_the_grace_period_ends_that_message_with_final_false_and_an_error() -> None:
    host = StatusHost(lambda mid, n, age: RawResponse(404, {}, b"{}"))

    async def main() -> tuple[list[DeliveryReport], float]:
        loop = asyncio.get_running_loop()
        async with client_for(host) as client:
            started = loop.time()
            reports = await collect(client.track([accepted(1)], timeout=600, every=5.0))
            return reports, loop.time() - started

    (report,), elapsed = run_virtual(main())
    assert report.final is False
    assert report.error is not None
    assert "not found" in report.error
    assert NOT_FOUND_GRACE <= elapsed < NOT_FOUND_GRACE + 30


def test_wrong_credentials_stop_tracking_with_authentication_error() -> None:
    host = StatusHost(lambda mid, n, age: RawResponse(401, {}, b'{"error": {"code": "UNAUTHORIZED"}}'))

    async def main() -> None:
        async with client_for(host) as client:
            await collect(client.track([accepted(i) for i in range(10)]))

    with pytest.raises(AuthenticationError):
        run_virtual(main())


def test_tracking_runs_a_fixed_number_of_tasks_however_many_messages() -> None:
    host = StatusHost(lifecycle(final_after=5.0))
    peak = 0

    async def main() -> None:
        nonlocal peak
        async with client_for(host, status_rate_limit=RateLimit(requests_per_second=5000, burst=5000)) as client:
            async for _ in client.track((accepted(i) for i in range(20_000)), every=1.0):
                peak = max(peak, len(asyncio.all_tasks()))

    run_virtual(main())
    assert peak <= 25


def test_status_reads_one_message_from_the_status_host_with_the_api_key_only() -> None:
    host = StatusHost(lambda mid, n, age: status_answer("delivered", cost=0.05, extendedStatuses={"sms": "delivered"}))

    async def main() -> DeliveryReport:
        async with CascadeClient(api_key="key", telegram_key="tg", transport=host) as client:
            assert client.status_base_url == DEFAULT_STATUS_URL
            return await client.status("3fa85f64/x")

    report = run_virtual(main())
    assert report.delivered
    assert report.channel == "sms"
    assert host.urls == [DEFAULT_STATUS_URL + "/bat/message/3fa85f64%2Fx"]
    assert host.headers[0]["X-Authorization-Key"] == "key"
    assert "X-Tg-Bot-Key" not in host.headers[0]


@pytest.mark.parametrize(
    ("base_url", "status_base_url", "expected"),
    [
        pytest.param("https://restapi.smsbat.com", None, "https://api.smsbat.com", id="provider-default"),
        pytest.param("http://127.0.0.1:8080", None, "http://127.0.0.1:8080", id="sandbox-serves-both"),
        pytest.param("https://restapi.smsbat.com", "https://status.example", "https://status.example", id="given"),
    ],
)
def test_the_status_host_defaults_by_base_url(base_url: str, status_base_url: str | None, expected: str) -> None:
    client = CascadeClient(api_key="k", base_url=base_url, status_base_url=status_base_url)
    assert client.status_base_url == expected


def test_a_404_from_status_raises_message_not_found_and_is_not_retried() -> None:
    host = StatusHost(lambda mid, n, age: RawResponse(404, {}, b'{"error": {"message": "no such message"}}'))

    async def main() -> None:
        async with client_for(host) as client:
            await client.status("m1")

    with pytest.raises(MessageNotFoundError, match="no such message") as info:
        run_virtual(main())
    assert info.value.status == 404
    assert host.per_message["m1"] == 1


def test_a_500_from_the_status_host_is_retried_by_the_same_engine() -> None:
    host = StatusHost(lambda mid, n, age: RawResponse(500, {}, b"") if n == 1 else status_answer("scheduled"))

    async def main() -> DeliveryReport:
        async with client_for(host) as client:
            return await client.status("m1")

    assert run_virtual(main()).status is DeliveryStatus.SCHEDULED
    assert host.per_message["m1"] == 2


def test_status_without_an_api_key_says_the_status_host_needs_one() -> None:
    async def main() -> None:
        async with CascadeClient(viber_token="v", transport=StatusHost(lifecycle())) as client:
            await client.status("m1")

    with pytest.raises(ValueError, match="needs an API key"):
        run_virtual(main())


@pytest.mark.parametrize(
    ("outcome", "final_after", "final", "status"),
    [
        pytest.param("delivered", 2.0, True, DeliveryStatus.DELIVERED, id="delivered"),
        pytest.param("undeliverable", 2.0, True, DeliveryStatus.UNDELIVERABLE, id="undelivered-does-not-raise"),
        pytest.param("delivered", 100.0, False, DeliveryStatus.PROCESSING, id="timeout-gives-final-false"),
    ],
)
def test_wait_delivered_returns_the_final_report_or_final_false(
    outcome: str, final_after: float, final: bool, status: DeliveryStatus
) -> None:
    host = StatusHost(lifecycle(final_after=final_after, outcome=outcome))

    async def main() -> tuple[DeliveryReport, float]:
        loop = asyncio.get_running_loop()
        async with client_for(host) as client:
            started = loop.time()
            report = await client.wait_delivered(accepted(1), timeout=30)
            return report, loop.time() - started

    report, elapsed = run_virtual(main())
    assert (report.final, report.status) == (final, status)
    assert elapsed <= 31 if not final else elapsed <= final_after + 2


def test_wait_delivered_refuses_a_result_that_was_not_accepted() -> None:
    async def main() -> None:
        async with client_for(StatusHost(lifecycle())) as client:
            await client.wait_delivered(Result(tracking_id="x", status=Status.FAILED))

    with pytest.raises(ValueError, match="was not accepted"):
        run_virtual(main())


def test_the_data_bucket_is_shared_through_redis_under_its_own_key_apart_from_sending() -> None:
    pytest.importorskip("redis")
    shared = RateLimit(requests_per_second=50, burst=75, redis_url="redis://127.0.0.1:1/0")
    client = CascadeClient(api_key="key", status_rate_limit=shared)
    limiter = client._status.limiter
    assert type(limiter).__name__ == "SharedLimiter"
    assert repr(limiter).startswith("<SharedLimiter cascade:rl:")
    assert ":data at redis://127.0.0.1:1/0" in repr(limiter)


def test_closing_the_client_ends_tracking_with_client_closed_error() -> None:
    from cascade_async import ClientClosedError

    host = StatusHost(lifecycle(final_after=10_000.0))

    async def main() -> None:
        client = client_for(host)
        stream = client.track([accepted(i) for i in range(3)], every=1.0)
        asyncio.get_running_loop().call_later(3.0, lambda: asyncio.ensure_future(client.aclose()))
        await collect(stream)

    with pytest.raises(ClientClosedError):
        run_virtual(main())

"""Sending one batch: statuses read from one table, the retry loop, deadlines and per-message errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cascade_async import (
    BadRequestError,
    BatchSent,
    CascadeClient,
    CascadeError,
    EndpointError,
    Event,
    Message,
    RateLimit,
    RawResponse,
    Result,
    RetryPolicy,
    RetryScheduled,
    ServerError,
    Status,
    ValidationError,
)

from .support import FakeTransport, error, make, msg, ok_for, run_virtual, scripted


def accepted_with(status: int) -> Any:
    def respond(messages: list[dict[str, Any]], n: int) -> RawResponse:
        return RawResponse(status, {}, ok_for(messages).body)

    return respond


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_with_acknowledgements_is_success(status: int) -> None:
    t = FakeTransport(accepted_with(status))

    async def main() -> list[Result]:
        async with make(t) as c:
            return [r async for r in c.stream([msg(1), msg(2)])]

    assert all(r.ok for r in run_virtual(main()))


def test_a_2xx_without_a_valid_body_is_outcome_unknown_not_a_certain_failure() -> None:
    t = FakeTransport(lambda m, n: RawResponse(202, {}, b""))

    async def main() -> list[Result]:
        async with make(t) as c:
            return [r async for r in c.stream([msg(1)])]

    (r,) = run_virtual(main())
    assert r.status is Status.FAILED
    assert r.outcome_unknown


@pytest.mark.parametrize("status", [301, 302, 307, 404, 405, 415])
def test_a_wrong_endpoint_stops_the_call_and_settles_nothing(status: int) -> None:
    t = FakeTransport(lambda m, n: error(status, Location="https://elsewhere.example/"))

    async def main() -> tuple[list[Result], BaseException | None]:
        got: list[Result] = []
        async with make(t, batch_size=5) as c:
            try:
                async for r in c.stream([msg(i) for i in range(20)]):
                    got.append(r)
            except EndpointError as exc:
                return got, exc
        return got, None

    got, exc = run_virtual(main())
    assert isinstance(exc, EndpointError)
    assert exc.status == status
    assert got == []  # no message is REJECTED for a URL's mistake
    assert len(t.calls) <= 2  # only batches already in flight


def test_send_many_attaches_the_partial_report_to_the_error_that_stopped_it() -> None:
    t = scripted("ok", error(404))

    async def main() -> BaseException:
        async with make(t, batch_size=5, max_in_flight=1) as c:
            with pytest.raises(EndpointError) as info:
                await c.send_many([msg(i) for i in range(20)])
            return info.value

    exc = run_virtual(main())
    report = exc.partial_report  # type: ignore[attr-defined]
    assert len(report) == 5
    assert report.count(Status.ACCEPTED) == 5


def test_408_is_retried() -> None:
    t = scripted(error(408), "ok")

    async def main() -> Result:
        async with make(t, retry=RetryPolicy(initial_wait=0.1)) as c:
            return await c.send(msg(1))

    assert run_virtual(main()).attempts == 2


@pytest.mark.parametrize(
    ("status", "calls", "unknown"), [(521, 2, False), (522, 2, False), (504, 1, True), (524, 1, True)]
)
def test_gateway_statuses_are_certain_or_unknown_as_the_table_says(status: int, calls: int, unknown: bool) -> None:
    t = scripted(error(status), "ok")

    async def main() -> Result:
        async with make(t, retry=RetryPolicy(initial_wait=0.1)) as c:
            (result,) = [r async for r in c.stream([msg(1)])]
            return result

    r = run_virtual(main())
    assert len(t.calls) == calls
    assert r.outcome_unknown is unknown
    assert r.ok is (not unknown)


def test_the_batch_deadline_counts_from_the_first_attempt() -> None:
    # The first attempt takes 100 s and fails; with a 120 s deadline no retry may start
    # after t = 120 s.
    calls: list[float] = []

    async def slow_then_fail(messages: list[dict[str, Any]], n: int) -> RawResponse:
        calls.append(asyncio.get_running_loop().time())
        if n == 1:
            await asyncio.sleep(100)
        return error(503)

    t = FakeTransport(slow_then_fail)
    policy = RetryPolicy(max_attempts=50, initial_wait=1.0, max_wait=8.0, deadline=120.0, budget=10_000)

    async def main() -> Result:
        async with make(t, retry=policy) as c:
            (result,) = [r async for r in c.stream([msg(1)])]
            return result

    r = run_virtual(main())
    assert r.status is Status.FAILED
    assert calls[-1] <= 120.0
    assert r.error is not None
    assert "deadline" in (r.error.gave_up or "")


def test_each_result_owns_its_exception() -> None:
    t = FakeTransport(lambda m, n: error(500))

    async def main() -> list[Result]:
        async with make(t, retry=RetryPolicy(max_attempts=1)) as c:
            return [r async for r in c.stream([msg(i) for i in range(3)])]

    results = run_virtual(main())
    errors = [r.error for r in results]
    assert len({id(e) for e in errors}) == 3
    assert all(isinstance(e, ServerError) for e in errors)
    assert sorted(str(e.tracking_id) for e in errors if e is not None) == ["m0", "m1", "m2"]


def test_coalesced_callers_get_their_own_exception_objects() -> None:
    t = FakeTransport(lambda m, n: error(500), latency=0.01)

    async def main() -> list[BaseException | Result]:
        async with make(t, retry=RetryPolicy(max_attempts=1)) as c:
            return await asyncio.gather(*(c.send(msg(i)) for i in range(4)), return_exceptions=True)

    outcomes = run_virtual(main())
    assert len(t.calls) == 1
    assert all(isinstance(o, ServerError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 4
    tracebacks = {id(o.__traceback__) for o in outcomes if isinstance(o, BaseException)}
    assert len(tracebacks) == 4


def test_send_batch_above_the_message_burst_is_a_validation_error_naming_the_limit() -> None:
    t = FakeTransport()

    async def main() -> BaseException:
        limit = RateLimit(messages_per_second=100, message_burst=100)
        async with make(t, rate_limit=limit, batch_size=100) as c:
            with pytest.raises(ValidationError) as info:
                await c.send_batch([Message.from_dict(msg(i)) for i in range(150)])
            return info.value

    exc = run_virtual(main())
    assert "message_burst" in str(exc)
    assert "100" in str(exc)
    assert t.calls == []


def test_a_thousand_copies_of_one_id_without_dedupe_all_get_through_without_recursion() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=1000, dedupe=False) as c:
            return [r async for r in c.stream([msg(1) for _ in range(1000)])]

    results = run_virtual(main())
    assert len(results) == 1000
    assert all(r.ok for r in results)
    assert all(len(b) == 1 for b in t.batches)


def test_events_carry_the_exception_object() -> None:
    events: list[Event] = []
    t = scripted(error(500), "ok")

    async def main() -> None:
        async with make(t, on_event=events.append, retry=RetryPolicy(initial_wait=0.1)) as c:
            await c.send(msg(1))

    run_virtual(main())
    retry = next(e for e in events if isinstance(e, RetryScheduled))
    assert isinstance(retry.error, ServerError)
    sent = [e for e in events if isinstance(e, BatchSent)]
    assert [e.status for e in sent] == [500, 200]


def test_settings_are_read_only_after_construction() -> None:
    c = CascadeClient(api_key="k")
    for name, value in [("base_url", "https://x"), ("batch_size", 10), ("linger", 1.0), ("max_in_flight", 1)]:
        with pytest.raises(AttributeError):
            setattr(c, name, value)


def test_bad_request_errors_do_not_name_every_message_the_same() -> None:
    t = FakeTransport(lambda m, n: error(400, "INVALID", "text"))

    async def main() -> list[Result]:
        async with make(t, isolate_bad_messages=False) as c:
            return [r async for r in c.stream([msg(1), msg(2)])]

    errs = [r.error for r in run_virtual(main())]
    assert all(isinstance(e, BadRequestError) for e in errs)
    assert [e.tracking_id for e in errs if isinstance(e, CascadeError)] == ["m1", "m2"]


@pytest.mark.parametrize("status", [501, 505, 507, 599])
def test_a_5xx_outside_the_table_is_a_failure_not_a_rejection(status: int) -> None:
    t = FakeTransport(lambda m, n: error(status))

    async def main() -> list[Result]:
        async with make(t) as c:
            return [r async for r in c.stream([msg(1)])]

    (r,) = run_virtual(main())
    assert r.status is Status.FAILED
    assert len(t.calls) == 1


def test_a_proxy_asking_for_its_own_credentials_stops_the_call() -> None:
    t = FakeTransport(lambda m, n: error(407))

    async def main() -> None:
        async with make(t) as c:
            with pytest.raises(EndpointError):
                await c.send_many([msg(1)])

    run_virtual(main())


def test_isolation_never_spends_more_than_its_cap_even_when_halves_need_retries() -> None:
    def respond(messages: list[dict[str, Any]], n: int) -> RawResponse:
        if n == 1:
            return error(400, "BAD", "text")
        if n <= 7:
            return error(503)
        return ok_for(messages)

    t = FakeTransport(respond)

    async def main() -> list[Result]:
        async with make(t, max_isolation_requests=2, retry=RetryPolicy(initial_wait=0.1)) as c:
            return [r async for r in c.stream([msg(i) for i in range(8)])]

    results = run_virtual(main())
    assert len(results) == 8
    assert len(t.calls) <= 1 + 2
    assert all(r.status is Status.FAILED for r in results)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("text", "x\ud800", id="lone-surrogate-text"),
        pytest.param("fromName", "Shop\udfff", id="lone-surrogate-sender"),
        pytest.param("scheduledSent", "0001-01-01T00:00:00+01:00", id="schedule-out-of-range"),
        pytest.param("ttl", 10**2000, id="ttl-beyond-int32"),
        pytest.param("surveyOptions", [], id="empty-options-on-a-transaction"),
    ],
)
def test_one_unusual_input_is_rejected_alone_and_costs_no_other_message(field: str, value: Any) -> None:
    t = FakeTransport()
    items = [msg(i) for i in range(3)] + [msg("odd", **{field: value})] + [msg(i) for i in range(3, 8)]

    async def main(source: Any) -> list[Result]:
        async with make(t, batch_size=5, max_batch_bytes=4096) as c:
            return [r async for r in c.stream(source)]

    async def from_async() -> Any:
        for item in items:
            yield item

    for source in (items, from_async()):
        results = run_virtual(main(source))
        assert len(results) == 9
        bad = [r for r in results if not r.ok]
        assert [r.tracking_id for r in bad] == ["odd"]
        assert bad[0].status is Status.REJECTED
        assert isinstance(bad[0].error, ValidationError)
    assert all(len(json.dumps(call[3])) <= 4096 for call in t.calls)


class _CountingRetrying:
    """Wraps tenacity.AsyncRetrying to count the loops built."""

    built = 0

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import tenacity

        real = tenacity.AsyncRetrying

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.built += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(tenacity, "AsyncRetrying", counting)


def test_a_batch_that_succeeds_at_once_builds_no_retry_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loops = _CountingRetrying(monkeypatch)
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=2) as c:
            return [r async for r in c.stream([msg(i) for i in range(6)])]

    results = run_virtual(main())
    assert [r.attempts for r in results] == [1] * 6
    assert loops.built == 0


@pytest.mark.parametrize(
    ("answers", "attempts", "waits", "loops_built"),
    [
        pytest.param([error(503), "ok"], 2, [1], 1, id="one retry"),
        pytest.param([error(503), error(503), error(503), "ok"], 4, [1, 2, 4], 1, id="three retries"),
        pytest.param([error(503)] * 4, 4, [1, 2, 4], 1, id="gives up after max_attempts"),
        pytest.param([error(400, "BAD", "text")], 1, [], 0, id="a rejection is not retried"),
    ],
)
def test_after_a_bare_first_attempt_the_retries_keep_their_numbers_waits_and_limits(
    monkeypatch: pytest.MonkeyPatch, answers: list[Any], attempts: int, waits: list[float], loops_built: int
) -> None:
    loops = _CountingRetrying(monkeypatch)
    events: list[Event] = []
    t = scripted(*answers)

    class Ceiling:  # full jitter drawn at its ceiling: the wait shows the attempt number it was given
        def uniform(self, a: float, b: float) -> float:
            return b

    async def main() -> Result:
        async with make(t, on_event=events.append, retry=RetryPolicy(max_attempts=4, initial_wait=1.0)) as c:
            c._sender._rng = Ceiling()  # type: ignore[assignment]
            (r,) = [r async for r in c.stream([msg(1)])]
            return r

    r = run_virtual(main())
    assert r.attempts == attempts
    assert len(t.calls) == attempts
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [e.attempt for e in scheduled] == list(range(1, len(waits) + 1))
    assert [e.delay for e in scheduled] == waits
    assert loops.built == loops_built


@pytest.mark.parametrize(
    ("answers", "limited", "calls", "attempts", "scheduled"),
    [
        # A 429 the limiter waits out is no attempt: the retry after the 503 is the first.
        pytest.param([error(429, **{"Retry-After": "1"}), error(503), "ok"], True, 3, 2, [1], id="429 then 503"),
        pytest.param([error(503), error(429, **{"Retry-After": "1"}), "ok"], True, 3, 2, [1], id="503 then 429"),
        # Without a limiter a 429 is an ordinary failure: it counts.
        pytest.param([error(429), error(503), "ok"], False, 3, 3, [1, 2], id="429 without a limiter"),
        # The halves of an isolated batch count their own attempts from 1.
        pytest.param([error(400, "BAD", "text"), error(503), "ok", "ok"], False, 4, 3, [1], id="isolation"),
    ],
)
def test_retries_are_numbered_from_each_send_and_429_back_pressure_is_not_an_attempt(
    answers: list[Any], limited: bool, calls: int, attempts: int, scheduled: list[int]
) -> None:
    events: list[Event] = []
    t = scripted(*answers)

    async def main() -> list[Result]:
        kw: dict[str, Any] = {"rate_limit": RateLimit(requests_per_second=50)} if limited else {}
        async with make(t, on_event=events.append, retry=RetryPolicy(max_attempts=3, initial_wait=0.1), **kw) as c:
            return [r async for r in c.stream([msg(1), msg(2)])]

    results = run_virtual(main())
    assert len(t.calls) == calls
    assert max(r.attempts for r in results) == attempts
    assert all(r.ok for r in results)
    assert [e.attempt for e in events if isinstance(e, RetryScheduled)] == scheduled


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param('"\u00a7status": "rejected"', id="a reserved status key"),
        pytest.param('"\\u00a7status": "failed"', id="the same key spelled with an escape"),
        pytest.param('"\u00a7attempts": 7, "\u00a7from_journal": true', id="attempts and journal"),
        pytest.param('"\u00a7error": {"message": "x"}', id="an error object"),
    ],
)
def test_an_answer_cannot_set_result_fields_it_does_not_document(extra: str) -> None:
    def respond(messages: list[dict[str, Any]], n: int) -> RawResponse:
        entries = [f'{{"messageId": "mid-{m["id"]}", "trackinId": "{m["id"]}", {extra}}}' for m in messages]
        return RawResponse(200, {}, ("[" + ", ".join(entries) + "]").encode())

    async def main() -> list[Result]:
        async with make(FakeTransport(respond)) as c:
            return [r async for r in c.stream([msg(1), msg(2)])]

    results = run_virtual(main())
    assert [(r.status, r.message_id, r.error, r.attempts, r.from_journal) for r in results] == [
        (Status.ACCEPTED, f"mid-m{i}", None, 1, False) for i in (1, 2)
    ]


def test_ids_whose_utf8_holds_the_reserved_byte_or_an_escape_are_still_matched() -> None:
    ids = ["façade-1", 'quote"d', "plain"]  # "ç" is C3 A7 in UTF-8; a quote is escaped in JSON

    async def main() -> list[Result]:
        async with make(FakeTransport()) as c:
            return [r async for r in c.stream([msg(i) for i in ids])]

    results = run_virtual(main())
    assert sorted(r.tracking_id for r in results if r.ok) == sorted(ids)

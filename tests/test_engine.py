"""The bulk engine under a fake transport and a virtual clock: deterministic and fast."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cascade_async import (
    AuthenticationError,
    BadRequestError,
    BatchCompleted,
    BatchSent,
    CascadeClient,
    EndpointError,
    Event,
    RateLimit,
    RateLimitError,
    RawResponse,
    Result,
    RetryPolicy,
    RetryScheduled,
    ServerError,
    Status,
    ValidationError,
)

from .support import FakeTransport, error, make, msg, ok_for, run_virtual, scripted, timeout_error

FAST_RETRY = RetryPolicy(initial_wait=1.0)



async def collect(client: CascadeClient, source: Any) -> list[Result]:
    return [r async for r in client.stream(source)]


# --- chunking ------------------------------------------------------------------------------


def test_batches_of_batch_size_and_one_result_per_message() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=100) as c:
            return await collect(c, [msg(i) for i in range(1050)])

    results = run_virtual(main())
    assert [len(b) for b in t.batches] == [100] * 10 + [50]
    assert sorted(r.tracking_id for r in results) == sorted(f"m{i}" for i in range(1050))
    assert all(r.status is Status.ACCEPTED and r.message_id == f"mid-{r.tracking_id}" for r in results)


def test_max_batch_bytes_splits_a_batch() -> None:
    t = FakeTransport()
    big = [msg(i, text="x" * 900) for i in range(40)]

    async def main() -> list[Result]:
        async with make(t, batch_size=40, max_batch_bytes=10_000) as c:
            return await collect(c, big)

    results = run_virtual(main())
    assert len(results) == 40
    assert all(r.ok for r in results)
    assert len(t.batches) > 1
    assert max(len(b) for b in t.batches) * 1000 < 10_000 + 1000


def test_a_single_message_over_the_byte_cap_is_rejected_alone() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=10, max_batch_bytes=2048) as c:
            return await collect(c, [msg(1, text="y" * 5000), msg(2)])

    by_id = {r.tracking_id: r for r in run_virtual(main())}
    assert by_id["m1"].status is Status.REJECTED
    assert by_id["m1"].error is not None
    assert by_id["m1"].error.code == "MESSAGE_TOO_LARGE"
    assert by_id["m2"].ok
    assert t.batches == [["m2"]]


def test_linger_sends_a_partial_batch_from_a_slow_source() -> None:
    t = FakeTransport()

    async def slow() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield msg(i)
        await asyncio.sleep(10)
        yield msg(3)

    async def main() -> None:
        async with make(t, batch_size=500, linger=0.05) as c:
            assert len(await collect(c, slow())) == 4

    run_virtual(main())
    assert t.batches == [["m0", "m1", "m2"], ["m3"]]
    assert t.calls[0][0] == pytest.approx(0.05)
    assert t.calls[1][0] == pytest.approx(10.0)  # the end of input flushes at once


def test_max_in_flight_is_respected() -> None:
    t = FakeTransport(latency=1.0)

    async def main() -> None:
        async with make(t, batch_size=10, max_in_flight=3) as c:
            await collect(c, [msg(i) for i in range(200)])

    run_virtual(main())
    assert t.max_in_flight == 3


# --- input problems ------------------------------------------------------------------------


def test_invalid_items_are_rejected_and_the_job_goes_on() -> None:
    t = FakeTransport()
    source: list[Any] = [msg(0), msg(1, toPhone="0501234567"), {"fromName": "x"}, "junk", msg(2)]

    async def main() -> list[Result]:
        async with make(t, batch_size=10) as c:
            return await collect(c, source)

    by_id = {r.tracking_id: r for r in run_virtual(main())}
    assert set(by_id) == {"m0", "m1", "<input #3>", "<input #4>", "m2"}
    assert by_id["m1"].status is Status.REJECTED
    assert isinstance(by_id["m1"].error, ValidationError)
    assert by_id["m1"].error.field == "toPhone"
    assert by_id["<input #3>"].status is Status.REJECTED
    assert by_id["m0"].ok
    assert by_id["m2"].ok
    assert t.batches == [["m0", "m2"]]


def test_repeated_ids_are_rejected_not_sent_twice() -> None:
    t = FakeTransport()

    async def main() -> Any:
        async with make(t, batch_size=10) as c:
            return await c.send_many([msg(1), msg(2), msg(1, text="again"), msg(1)])

    report = run_virtual(main())
    assert list(report) == ["m1", "m2"]
    assert report["m1"].ok
    assert [d.tracking_id for d in report.duplicates] == ["m1", "m1"]
    assert all(d.error is not None and d.error.code == "DUPLICATE_ID" for d in report.duplicates)
    assert t.batches == [["m1", "m2"]]


def test_source_failure_raises_after_delivering_what_was_read() -> None:
    t = FakeTransport()

    def source() -> Iterator[dict[str, Any]]:
        yield msg(1)
        yield msg(2)
        raise OSError("disk gone")

    async def main() -> list[Result]:
        got: list[Result] = []
        async with make(t, batch_size=10) as c:

            async def drain() -> None:
                async for r in c.stream(source()):
                    got.append(r)

            with pytest.raises(OSError, match="disk gone"):
                await drain()
        return got

    assert sorted(r.tracking_id for r in run_virtual(main())) == ["m1", "m2"]


# --- retries -------------------------------------------------------------------------------


def test_backoff_sequence_grows_and_then_succeeds() -> None:
    t = scripted(error(500), error(503), error(502), "ok")

    async def main() -> list[Result]:
        async with make(t, retry=FAST_RETRY) as c:
            return await collect(c, [msg(1)])

    (r,) = run_virtual(main())
    assert r.ok
    assert r.attempts == 4
    times = [c[0] for c in t.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, ceiling in zip(gaps, [1.0, 2.0, 4.0], strict=True):
        assert 0.0 <= gap <= ceiling
    assert sum(gaps) > 0


def test_retry_after_is_honoured_exactly() -> None:
    t = scripted(error(429, **{"Retry-After": "7"}), "ok")

    async def main() -> None:
        async with make(t, retry=FAST_RETRY) as c:
            assert (await c.send(msg(1))).ok

    run_virtual(main())
    assert t.calls[1][0] - t.calls[0][0] == pytest.approx(7.0)


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    t = scripted(*[error(500)] * 10)

    async def main() -> list[Result]:
        async with make(t, retry=FAST_RETRY) as c:
            return await collect(c, [msg(1), msg(2)])

    results = run_virtual(main())
    assert len(t.calls) == 4
    for r in results:
        assert r.status is Status.FAILED
        assert r.attempts == 4
        assert isinstance(r.error, ServerError)
        assert "gave up after 4 attempts" in str(r.error)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415, 422])
def test_permanent_statuses_are_never_retried(status: int) -> None:
    t = scripted(error(status), "ok")

    async def main() -> None:
        async with make(t, retry=FAST_RETRY) as c:
            with pytest.raises((BadRequestError, AuthenticationError, EndpointError)):
                await c.send(msg(1))

    run_virtual(main())
    assert len(t.calls) == 1


def test_deadline_stops_retries() -> None:
    t = scripted(*[error(429, **{"Retry-After": "50"})] * 10)

    async def main() -> Result:
        async with make(t, retry=RetryPolicy(max_attempts=10, max_retry_after=60, deadline=120)) as c:
            (r,) = await collect(c, [msg(1)])
            return r

    r = run_virtual(main())
    assert len(t.calls) == 3  # at 0, 50, 100; a wait to 150 would pass the deadline
    assert isinstance(r.error, RateLimitError)
    assert "deadline" in str(r.error)


def test_retry_budget_stops_retry_storms_and_says_why() -> None:
    t = FakeTransport(lambda messages, n: error(503))

    async def main() -> list[Result]:
        policy = RetryPolicy(budget=10, retry_cost=5, initial_wait=0.1)
        async with make(t, retry=policy, batch_size=1, max_in_flight=1) as c:
            return await collect(c, [msg(i) for i in range(5)])

    results = run_virtual(main())
    assert len(t.calls) == 5 + 2  # two retries paid for, then none
    assert all(r.status is Status.FAILED for r in results)
    assert sum("retry budget exhausted" in str(r.error) for r in results) >= 3


def test_connection_errors_are_retried_and_ambiguous_ones_only_on_request() -> None:
    from cascade_async import TransportError

    t = scripted(TransportError("refused"), TransportError("refused"), "ok")

    async def main(policy: RetryPolicy) -> Result:
        async with make(t, retry=policy) as c:
            (r,) = await collect(c, [msg(1)])
            return r

    assert run_virtual(main(FAST_RETRY)).attempts == 3
    t = scripted(timeout_error(), "ok")
    r = run_virtual(main(FAST_RETRY))
    assert r.status is Status.FAILED
    assert r.outcome_unknown
    assert r.attempts == 1
    t = scripted(timeout_error(), TransportError("reset", outcome_unknown=True), "ok")
    r = run_virtual(main(RetryPolicy(initial_wait=1.0, retry_ambiguous=True)))
    assert r.ok
    assert r.attempts == 3


# --- 400 bisection -------------------------------------------------------------------------


def reject_bad(messages: list[dict[str, Any]], n: int) -> RawResponse:
    if any(m["text"].startswith("BAD") for m in messages):
        return error(400, "INVALID_PHONE", "text")
    return ok_for(messages)


def test_bisection_isolates_exactly_the_bad_messages() -> None:
    t = FakeTransport(reject_bad)
    bad = {5, 77, 78, 200}
    source = [msg(i, text="BAD" if i in bad else "fine") for i in range(256)]

    async def main() -> list[Result]:
        async with make(t, batch_size=256) as c:
            return await collect(c, source)

    results = run_virtual(main())
    assert len(results) == 256
    rejected = {r.tracking_id for r in results if r.status is Status.REJECTED}
    assert rejected == {f"m{i}" for i in bad}
    assert all(r.ok for r in results if r.tracking_id not in rejected)
    err = next(r.error for r in results if r.tracking_id == "m5")
    assert isinstance(err, BadRequestError)
    assert err.code == "INVALID_PHONE"
    # documented cost: about bad * log2(batch) extra requests (2 per level at most)
    assert len(t.calls) <= 1 + 2 * len(bad) * 8


def test_bisection_can_be_switched_off() -> None:
    t = FakeTransport(reject_bad)

    async def main() -> list[Result]:
        async with make(t, batch_size=10, isolate_bad_messages=False) as c:
            return await collect(c, [msg(i, text="BAD" if i == 3 else "ok") for i in range(10)])

    results = run_virtual(main())
    assert len(t.calls) == 1
    assert all(r.status is Status.REJECTED for r in results)


# --- 401 aborts ----------------------------------------------------------------------------


def test_authentication_failure_aborts_the_whole_call_at_once() -> None:
    t = FakeTransport(lambda messages, n: error(401, "UNAUTHORIZED"), latency=0.5)

    async def main() -> None:
        async with make(t, batch_size=10, max_in_flight=2) as c:
            with pytest.raises(AuthenticationError):
                await c.send_many([msg(i) for i in range(10_000)])
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run_virtual(main())
    assert len(t.calls) <= 2


# --- rate limiting -------------------------------------------------------------------------


@pytest.mark.parametrize("headroom", [0.0, 0.01, 0.1])
def test_rate_limit_holds_over_every_window(headroom: float) -> None:
    t = FakeTransport(latency=0.01)

    async def main() -> None:
        limit = RateLimit(requests_per_second=100, burst=150, headroom=headroom)
        async with make(t, rate_limit=limit, batch_size=1, max_in_flight=64) as c:
            await collect(c, [msg(i) for i in range(1000)])

    run_virtual(main())
    times = sorted(c[0] for c in t.calls)
    assert len(times) == 1000
    # 1000 - 150 requests of burst (less the interactive reserve bulk leaves), at 100/s less the headroom
    assert times[-1] == pytest.approx((850 + RateLimit().reserve) / (100 * (1 - headroom)), abs=0.05)
    counts = [sum(1 for x in times if s <= x < s + 1.0) for s in times]
    assert max(counts) <= 250
    after_burst = [sum(1 for x in times if s <= x < s + 1.0) for s in times if s >= 2.0]
    assert max(after_burst) <= (101 if headroom == 0 else 100)


def test_message_rate_limit_counts_messages() -> None:
    t = FakeTransport()

    async def main() -> None:
        limit = RateLimit(requests_per_second=1000, burst=1000, messages_per_second=100, message_burst=100, headroom=0)
        async with make(t, rate_limit=limit, batch_size=50) as c:
            await collect(c, [msg(i) for i in range(1000)])

    run_virtual(main())
    assert t.calls[-1][0] == pytest.approx(9.0, abs=0.1)  # 900 messages after the burst at 100/s


def test_message_bucket_smaller_than_a_batch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="message_burst"):
        CascadeClient(api_key="k", batch_size=500, rate_limit=RateLimit(messages_per_second=10, message_burst=10))


# --- backpressure and cancellation ---------------------------------------------------------


def test_backpressure_bounds_what_is_pulled_ahead_of_a_slow_consumer() -> None:
    t = FakeTransport()
    pulled = 0

    def huge() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield msg(i)

    async def main() -> None:
        async with make(t, batch_size=100, max_in_flight=4) as c, c.stream(huge()) as results:
            seen = 0
            async for _ in results:
                seen += 1
                if seen % 100 == 0:
                    await asyncio.sleep(1.0)  # a slow consumer
                if seen == 1000:
                    break
            await asyncio.sleep(5)
            assert pulled <= seen + (4 + 3) * 100
            assert len(t.calls) <= 10 + 4 + 1

    run_virtual(main())


def test_breaking_out_cancels_requests_and_leaves_no_tasks() -> None:
    t = FakeTransport(latency=30.0)

    async def main() -> None:
        async with make(t, batch_size=10, max_in_flight=4) as c:
            t.latency = 0.0
            async with c.stream([msg(i) for i in range(100)]) as results:
                async for _ in results:
                    t.latency = 30.0
                    break
            assert asyncio.all_tasks() == {asyncio.current_task()}
            assert t.in_flight == 0
            # plain async-for without a context manager: closed when the generator is dropped
            async for _ in c.stream([msg(i) for i in range(100, 200)]):
                break
            await asyncio.sleep(0.001)  # the loop's async-generator finalizer runs the cleanup
            assert asyncio.all_tasks() == {asyncio.current_task()}
            assert t.in_flight == 0

    run_virtual(main())


def test_cancelling_the_consumer_cancels_the_job() -> None:
    t = FakeTransport(latency=30.0)

    async def main() -> None:
        async with make(t, batch_size=10) as c:

            async def consume() -> None:
                async with c.stream([msg(i) for i in range(100)]) as results:
                    async for _ in results:
                        pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(1)
            assert t.in_flight > 0
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert t.in_flight == 0
            assert asyncio.all_tasks() == {asyncio.current_task()}

    run_virtual(main())


# --- report and events ---------------------------------------------------------------------


def test_send_many_report_in_input_order_with_views() -> None:
    t = FakeTransport(reject_bad)
    source = [msg(i, text="BAD" if i % 10 == 0 else "ok") for i in range(50)]

    async def main() -> Any:
        async with make(t, batch_size=7, max_in_flight=3) as c:
            return await c.send_many(source)

    report = run_virtual(main())
    assert list(report) == [f"m{i}" for i in range(50)]
    assert len(report.accepted) == 45
    assert len(report.rejected) == 5
    assert report.failed == []
    assert not report.ok
    assert report.summary().startswith("50 messages: 45 accepted, 5 rejected, 0 failed, 0 duplicates")


def test_event_hooks_see_sends_retries_and_results() -> None:
    t = scripted(error(500), "ok")
    events: list[Event] = []

    async def main() -> None:
        async with make(t, retry=FAST_RETRY, on_event=events.append) as c:
            await collect(c, [msg(1), msg(2)])

    run_virtual(main())
    kinds = [type(e) for e in events]
    assert kinds == [BatchSent, RetryScheduled, BatchSent, BatchCompleted]
    sent = events[0]
    assert isinstance(sent, BatchSent)
    assert (sent.status, sent.size, sent.attempt) == (500, 2, 1)
    retry = events[1]
    assert isinstance(retry, RetryScheduled)
    assert "500" in retry.reason
    assert 0 <= retry.delay <= 1
    done = events[3]
    assert isinstance(done, BatchCompleted)
    assert len(done.results) == 2


def test_a_failing_hook_costs_no_message() -> None:
    def hook(event: Event) -> None:
        raise RuntimeError("observer bug")

    async def main() -> list[Result]:
        async with make(FakeTransport(), on_event=hook) as c:
            return await collect(c, [msg(1)])

    assert run_virtual(main())[0].ok


def test_finished_jobs_leave_no_uncollectable_cycles() -> None:
    # Result is untracked by the collector (gc=False); errors stored in results must not
    # lead back to the job through traceback frames, or a job would leak whole.
    import gc
    import weakref

    t = scripted(error(500), error(400), timeout_error())

    async def main() -> weakref.ref[Any]:
        async with make(t, retry=RetryPolicy(max_attempts=1), batch_size=2) as c:
            stream = c.stream([msg(1), msg(2), msg(3), {"id": "x"}, msg(4), msg(5), msg(1)])
            results = [r async for r in stream]
            assert sum(r.error is not None for r in results) >= 5
            assert all(r.error is None or r.error.__traceback__ is None for r in results)
            return weakref.ref(stream)

    ref = run_virtual(main())
    gc.collect()
    assert ref() is None


def test_without_dedupe_every_occurrence_is_sent_once_per_request_and_nothing_is_remembered() -> None:
    t = FakeTransport()

    async def main() -> tuple[list[Result], object]:
        async with make(t, batch_size=10, dedupe=False) as c:
            stream = c.stream([msg(1), msg(2), msg(1, text="again"), msg(3), msg(1)])
            results = [r async for r in stream]
            return results, stream._reader.admission.seen

    results, remembered = run_virtual(main())
    assert remembered is None
    assert sorted(r.tracking_id for r in results) == ["m1", "m1", "m1", "m2", "m3"]
    assert all(r.ok for r in results)
    assert t.batches == [["m1", "m2", "m3"], ["m1"], ["m1"]]


def test_a_lost_answer_keeps_the_outcome_unknown_through_later_clear_failures() -> None:
    from cascade_async import TransportError

    t = scripted(TransportError("reset after send", outcome_unknown=True), error(500), error(503), error(500))

    async def main() -> Result:
        async with make(t, retry=RetryPolicy(initial_wait=1.0, retry_ambiguous=True)) as c:
            (r,) = await collect(c, [msg(1)])
            return r

    r = run_virtual(main())
    assert r.status is Status.FAILED
    assert isinstance(r.error, ServerError)
    assert r.outcome_unknown


def test_each_retry_decision_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="cascade_async")
    t = scripted(error(503), *[error(500)] * 5)

    async def main() -> None:
        async with make(t, retry=RetryPolicy(initial_wait=0.1, max_attempts=3)) as c:
            await collect(c, [msg(1)])

    run_virtual(main())
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert sum(m.startswith("retrying 1 message(s)") for m in debug) == 2
    assert any("not retrying" in m and "gave up after 3 attempts" in m for m in debug)


@pytest.mark.parametrize("rows_are_async", [False, True], ids=["sync rows", "async rows"])
def test_a_template_source_failure_raises_after_delivering_every_row_read_before_it(rows_are_async: bool) -> None:
    # Template rows are read a chunk at a time: the rows of the chunk that the failure cut
    # short were read like any others and go out before the error, as a plain source's do.
    from cascade_async import Template

    t = FakeTransport()

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(7):
            yield {"id": f"r{i}", "toPhone": "+380501234567", "name": f"n{i}"}
        raise OSError("disk gone")

    async def async_rows() -> AsyncIterator[dict[str, Any]]:
        for row in rows():
            yield row

    async def main() -> list[Result]:
        got: list[Result] = []
        async with make(t, batch_size=5) as c:
            items = Template("Hi {name}").messages(
                async_rows() if rows_are_async else rows(), from_name="Shop", message_type="transaction"
            )

            async def drain() -> None:
                async for r in c.stream(items):
                    got.append(r)

            with pytest.raises(OSError, match="disk gone"):
                await drain()
        return got

    got = run_virtual(main())
    assert sorted(r.tracking_id for r in got) == [f"r{i}" for i in range(7)]
    assert all(r.ok for r in got)


def test_keep_order_lists_every_input_id_once_in_input_order_and_only_before_iteration() -> None:
    t = FakeTransport()

    async def main() -> tuple[list[str] | None, list[str] | None]:
        async with make(t, batch_size=2) as c:
            plain = c.stream([msg(1)])
            async with plain:
                _ = [r async for r in plain]
            kept = c.stream([msg(3), msg(1), {"id": "bad"}, msg(2), msg(1)])
            kept.keep_order()
            async with kept:
                _ = [r async for r in kept]
            with pytest.raises(RuntimeError, match="before"):
                kept.keep_order()
            order = kept.first_occurrences
            return (None if plain.first_occurrences is None else list(plain.first_occurrences)), (
                None if order is None else list(order)
            )

    plain, kept = run_virtual(main())
    assert plain is None  # nothing kept per input unless asked
    assert kept == ["m3", "m1", "bad", "m2"]

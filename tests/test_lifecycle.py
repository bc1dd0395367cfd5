"""The client's lifecycle: after ``aclose()`` nothing more leaves, and nobody waits forever."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import random
from typing import Any

import pytest

from cascade_async import (
    AiohttpTransport,
    CascadeError,
    ClientClosedError,
    Message,
    RateLimit,
    Result,
    RetryPolicy,
    Status,
    TimeoutError,
)

from .support import FakeTransport, error, make, msg, ok_for, run_virtual, scripted, timeout_error


async def drain(stream: Any, into: list[Result]) -> BaseException | None:
    """Consume a stream into ``into``; the ClientClosedError that ended it, if one did."""
    try:
        async for r in stream:
            into.append(r)
    except ClientClosedError as exc:
        return exc
    return None


def endless() -> Any:
    for i in itertools.count():
        yield msg(i)


def test_every_entry_point_raises_client_closed_error_after_aclose() -> None:
    async def main() -> None:
        c = make(FakeTransport())
        stream = c.stream([msg(1)])
        await c.aclose()
        with pytest.raises(ClientClosedError):
            await c.send(msg(1))
        with pytest.raises(ClientClosedError):
            await c.send_batch([Message.from_dict(msg(1))])
        with pytest.raises(ClientClosedError):
            c.stream([msg(1)])
        with pytest.raises(ClientClosedError):
            await c.send_many([msg(1)])
        with pytest.raises(ClientClosedError):  # a stream made before the close
            [r async for r in stream]
        with pytest.raises(RuntimeError):  # today's callers that catch RuntimeError keep working
            await c.send(msg(1))

    run_virtual(main())


def test_a_closed_default_transport_refuses_work_instead_of_opening_a_new_session() -> None:
    async def main() -> None:
        transport = AiohttpTransport(timeout=1.0)
        await transport.aclose()
        with pytest.raises(ClientClosedError):
            await transport("http://127.0.0.1:9/x", {}, b"[]")

    asyncio.run(main())


def test_aclose_ends_a_running_stream_and_nothing_new_is_sent() -> None:
    t = FakeTransport(latency=1.0)

    async def main() -> tuple[list[Result], BaseException | None, int]:
        c = make(t, batch_size=10, max_in_flight=2)
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream(endless()), got))
        await asyncio.sleep(3.5)
        await c.aclose()
        failure = await asyncio.wait_for(task, 30)
        sent_at_close = len(t.calls)
        await asyncio.sleep(10)
        assert len(t.calls) == sent_at_close
        return got, failure, sent_at_close

    got, failure, sent = run_virtual(main())
    assert isinstance(failure, ClientClosedError)
    # every request that left got its results to the consumer: in flight at the close too
    assert sum(r.ok for r in got) == 10 * sent
    # what was read but never sent ends FAILED, certainly not sent: no input without a result
    unsent = [r for r in got if not r.ok]
    assert unsent
    assert all(isinstance(r.error, ClientClosedError) and not r.outcome_unknown for r in unsent)
    assert len({r.tracking_id for r in got}) == len(got)


def test_the_last_batches_in_flight_finish_normally_when_the_client_closes() -> None:
    # All input is already dispatched: the dispatcher is waiting for the batches, not reading.
    t = FakeTransport(latency=2.0)

    async def main() -> tuple[list[Result], BaseException | None]:
        c = make(t, batch_size=5, max_in_flight=8, close_timeout=10.0)
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream([msg(i) for i in range(20)]), got))
        await asyncio.sleep(1.0)
        await c.aclose()
        return got, await task

    got, failure = run_virtual(main())
    assert len(got) == 20
    assert all(r.ok for r in got)
    assert len(t.calls) == 4
    assert failure is None or isinstance(failure, ClientClosedError)


def test_batches_in_flight_past_close_timeout_end_failed_with_outcome_unknown() -> None:
    t = FakeTransport(latency=100.0)

    async def main() -> tuple[list[Result], BaseException | None]:
        c = make(t, batch_size=5, max_in_flight=1, close_timeout=1.0)
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream([msg(i) for i in range(20)]), got))
        await asyncio.sleep(0.5)
        await c.aclose()
        return got, await task

    got, failure = run_virtual(main())
    assert isinstance(failure, ClientClosedError)
    assert len(got) == 10  # what was read (in flight, and the next batch) has its result
    assert all(r.status is Status.FAILED for r in got)
    in_flight = [r for r in got if r.outcome_unknown]
    assert sorted(r.tracking_id for r in in_flight) == [f"m{i}" for i in range(5)]


def test_result_stream_aclose_from_another_task_wakes_the_consumer() -> None:
    t = FakeTransport(latency=1000.0)

    async def main() -> BaseException | None:
        c = make(t, batch_size=5)
        stream = c.stream([msg(i) for i in range(5)])

        async def consume() -> BaseException | None:
            try:
                async for _ in stream:
                    pass
            except ClientClosedError as exc:
                return exc
            return None

        task = asyncio.create_task(consume())
        await asyncio.sleep(1)
        await stream.aclose()
        result = await asyncio.wait_for(task, 5)
        await c.aclose()
        return result

    assert isinstance(run_virtual(main()), ClientClosedError)


def test_a_send_queued_behind_a_full_batch_at_aclose_is_flushed() -> None:
    t = FakeTransport(latency=0.5)

    async def main() -> list[Result | BaseException]:
        c = make(t, batch_size=2, max_in_flight=1, send_linger=10.0)
        sends = [asyncio.create_task(c.send(msg(i))) for i in range(5)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await c.aclose()
        return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = run_virtual(main())
    assert all(isinstance(o, Result) and o.ok for o in outcomes), outcomes


def test_sends_left_after_close_timeout_fail_with_a_cascade_error() -> None:
    t = FakeTransport(latency=1000.0)

    async def main() -> list[Result | BaseException]:
        c = make(t, batch_size=2, max_in_flight=1, send_linger=0.0, close_timeout=1.0, send_timeout=None)
        sends = [asyncio.create_task(c.send(msg(i))) for i in range(6)]
        await asyncio.sleep(0.1)
        await c.aclose()
        return await asyncio.gather(*sends, return_exceptions=True)

    outcomes = run_virtual(main())
    assert all(isinstance(o, CascadeError) for o in outcomes), outcomes
    assert all(isinstance(o, RuntimeError) for o in outcomes if isinstance(o, ClientClosedError))
    in_flight = [o for o in outcomes if isinstance(o, CascadeError) and o.outcome_unknown]
    assert len(in_flight) == 2


def test_every_send_queued_behind_a_full_batch_fails_after_close_timeout_however_many_wait() -> None:
    # More callers wait for room than one batch holds: the close wakes them all, not a batch's worth.
    t = FakeTransport(latency=1000.0)

    async def main() -> tuple[int, list[BaseException]]:
        c = make(t, batch_size=2, max_in_flight=1, send_linger=0.0, close_timeout=1.0, send_timeout=None)
        sends = [asyncio.create_task(c.send(msg(i))) for i in range(9)]
        await asyncio.sleep(0.1)
        await c.aclose()
        done, pending = await asyncio.wait(sends, timeout=3600)
        for task in pending:
            task.cancel()
        return len(pending), [e for task in done if (e := task.exception()) is not None]

    pending, errors = run_virtual(main())
    assert pending == 0
    assert len(errors) == 9
    assert all(isinstance(e, ClientClosedError) for e in errors), errors
    assert sorted(str(e.tracking_id) for e in errors if isinstance(e, ClientClosedError)) == [f"m{i}" for i in range(9)]


def test_send_timeout_raises_timeout_error_and_the_message_is_not_sent_later() -> None:
    # The first attempt gets a 429 that asks for 5 s; the caller gives up before the retry.
    t = scripted(error(429, **{"Retry-After": "5"}), "ok")

    async def main() -> BaseException:
        async with make(t, send_timeout=0.5) as c:
            with pytest.raises(TimeoutError) as info:
                await c.send(msg(1))
            await asyncio.sleep(60)
            return info.value

    exc = run_virtual(main())
    assert isinstance(exc, CascadeError)
    assert isinstance(exc, builtins.TimeoutError)
    assert not exc.outcome_unknown  # the only request that left was refused
    assert len(t.calls) == 1  # never retried behind the caller's back


def test_send_timeout_after_the_request_left_says_the_outcome_is_unknown() -> None:
    t = FakeTransport(latency=100.0)

    async def main() -> BaseException:
        async with make(t, send_timeout=1.0, close_timeout=0.1) as c:
            with pytest.raises(TimeoutError) as info:
                await c.send(msg(1))
            return info.value

    exc = run_virtual(main())
    assert isinstance(exc, TimeoutError)
    assert exc.outcome_unknown


def test_a_source_that_raises_cancelled_error_ends_the_stream_instead_of_hanging() -> None:
    async def source() -> Any:
        yield msg(0)
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def main() -> tuple[list[Result], BaseException | None]:
        got: list[Result] = []
        async with make(FakeTransport()) as c:
            try:
                async for r in c.stream(source()):
                    got.append(r)
            except CascadeError as exc:
                return got, exc
        return got, None

    got, failure = run_virtual(main())
    assert [r.tracking_id for r in got] == ["m0"]
    assert isinstance(failure, CascadeError)


def test_a_rejection_from_an_async_source_comes_out_before_the_source_yields_again() -> None:
    seen_at: dict[str, float] = {}

    async def source() -> Any:
        yield msg(0)
        yield msg(1, toPhone="0501234567")
        await asyncio.sleep(3600)
        yield msg(2)

    async def main() -> None:
        async with make(FakeTransport(), linger=0.05) as c:
            async for r in c.stream(source()):
                seen_at[r.tracking_id] = asyncio.get_running_loop().time()

    run_virtual(main())
    assert seen_at["m1"] < 1.0
    assert seen_at["m2"] >= 3600


def test_a_send_that_timed_out_while_waiting_for_the_rate_limiter_is_never_sent() -> None:
    t = FakeTransport()

    async def main() -> list[Result | BaseException]:
        limit = RateLimit(requests_per_second=1, burst=1)
        async with make(t, coalesce=False, send_timeout=0.5, rate_limit=limit) as c:
            outcomes = await asyncio.gather(*(c.send(msg(i)) for i in range(3)), return_exceptions=True)
            await asyncio.sleep(10)
            return outcomes

    outcomes = run_virtual(main())
    timed_out = [o for o in outcomes if isinstance(o, TimeoutError)]
    assert len(timed_out) == 2
    assert all(not o.outcome_unknown for o in timed_out)
    assert t.batches == [["m0"]]


def test_a_caller_that_timed_out_is_left_out_of_isolation_requests() -> None:
    def respond(messages: list[dict[str, Any]], n: int) -> Any:
        return error(400, "BAD", "text") if any(m["text"] == "bad" for m in messages) else ok_for(messages)

    t = FakeTransport(respond, latency=1.0)

    async def main() -> list[Result | BaseException]:
        async with make(t, send_timeout=1.5, send_linger=0.0) as c:
            sends = [c.send(msg(0, text="bad")), c.send(msg(1)), c.send(msg(2)), c.send(msg(3))]
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            await asyncio.sleep(10)
            return outcomes

    outcomes = run_virtual(main())
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    # the first request left before the deadline; the isolation requests after it were skipped
    assert len(t.calls) == 2
    assert all(call[0] < 1.5 for call in t.calls)


def test_a_repeated_id_whose_caller_timed_out_is_not_sent_in_the_next_round() -> None:
    t = FakeTransport(latency=2.0)

    async def main() -> tuple[Result | BaseException, Result | BaseException]:
        async with make(t, send_timeout=1.5) as c:
            return await asyncio.gather(c.send(msg(1)), c.send(msg(1, text="again")), return_exceptions=True)

    outcomes = run_virtual(main())
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert len(t.calls) == 1


def test_a_second_aclose_waits_for_the_first_to_finish() -> None:
    t = FakeTransport(latency=3.0)

    async def main() -> tuple[bool, Result | BaseException]:
        c = make(t, close_timeout=10.0, send_linger=0.0)
        send = asyncio.create_task(c.send(msg(1)))
        await asyncio.sleep(0.1)
        first = asyncio.create_task(c.aclose())
        await asyncio.sleep(0)
        await c.aclose()
        done_after_second = send.done()
        await first
        return done_after_second, await send

    done, outcome = run_virtual(main())
    assert done
    assert isinstance(outcome, Result)
    assert outcome.ok


def test_template_rows_read_but_not_yet_batched_get_a_result_when_the_client_closes() -> None:
    # A templated source is read a chunk of rows at a time; a rejected row leaves the batch
    # short, so the next chunk goes in part and the reader waits for room with the rest of
    # it in hand. Those rows were taken from the caller's source: each needs its result.
    from cascade_async import Template

    pulled: list[int] = []

    def rows() -> Any:
        for i in range(40):
            pulled.append(i)
            yield {"id": f"r{i}", "toPhone": "+380501234567" if i % 7 else "not a phone", "name": f"n{i}"}

    async def main() -> tuple[list[Result], BaseException | None]:
        c = make(FakeTransport(latency=1.0), batch_size=4, max_in_flight=1, close_timeout=0.0)
        items = Template("Hi {name}").messages(rows(), from_name="Shop", message_type="transaction")
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream(items), got))
        await asyncio.sleep(0.5)
        await c.aclose()
        return got, await task

    got, failure = run_virtual(main())
    assert isinstance(failure, ClientClosedError)
    assert sorted(r.tracking_id for r in got) == sorted(f"r{i}" for i in pulled)
    assert len(got) == len(pulled)


def test_template_rows_from_a_paused_async_source_get_a_result_when_the_client_closes() -> None:
    # Rows of an async source gather into a chunk while the source pauses: closing the
    # client then must not drop the rows already taken from it.
    from cascade_async import Template

    pulled: list[int] = []

    async def rows() -> Any:
        for i in range(10):
            pulled.append(i)
            yield {"id": f"r{i}", "toPhone": "+380501234567", "name": f"n{i}"}
            if i == 2:
                await asyncio.sleep(100)

    async def main() -> tuple[list[Result], BaseException | None]:
        c = make(FakeTransport(), batch_size=5, close_timeout=0.0)
        items = Template("Hi {name}").messages(rows(), from_name="Shop", message_type="transaction")
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream(items), got))
        await asyncio.sleep(5)
        await c.aclose()
        return got, await task

    got, failure = run_virtual(main())
    assert isinstance(failure, ClientClosedError)
    assert pulled == [0, 1, 2]
    assert sorted(r.tracking_id for r in got) == ["r0", "r1", "r2"]
    assert all(r.status is Status.FAILED and not r.outcome_unknown for r in got)


def test_template_rows_that_come_in_lists_longer_than_a_batch_get_a_result_when_the_client_closes() -> None:
    # RowLists (a reader's chunks) may hold more rows than a batch: the rows of a list taken
    # from the source are all answered, the ones not yet handed to the batcher included.
    from cascade_async import Template
    from cascade_async._templates import RowLists

    pulled: list[str] = []

    async def lists() -> Any:
        for k in range(3):
            part = [{"id": f"r{7 * k + j}", "toPhone": "+380501234567", "name": "x"} for j in range(7)]
            pulled.extend(row["id"] for row in part)
            yield part

    async def main() -> tuple[list[Result], BaseException | None]:
        c = make(FakeTransport(latency=1.0), batch_size=5, max_in_flight=1, close_timeout=0.0)
        items = Template("Hi {name}").messages(RowLists(lists()), from_name="Shop", message_type="transaction")
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream(items), got))
        await asyncio.sleep(0.5)
        await c.aclose()
        return got, await task

    got, failure = run_virtual(main())
    assert isinstance(failure, ClientClosedError)
    assert len(pulled) > 10  # a list was cut by a batch when the client closed
    assert sorted(r.tracking_id for r in got) == sorted(pulled)


@pytest.mark.parametrize(
    ("answers", "policy", "latency", "unknown"),
    [
        # The only request was refused for certain: at the close the batch waits out its backoff.
        pytest.param([error(503)], RetryPolicy(initial_wait=10.0), 0.0, False, id="backoff after a 503"),
        pytest.param([], RetryPolicy(), 10.0, True, id="request in flight"),
        # An earlier request may have got through: still unknown while it waits to retry.
        pytest.param(
            ["timeout"], RetryPolicy(initial_wait=10.0, retry_ambiguous=True), 0.0, True, id="backoff after a timeout"
        ),
        # One half was accepted before the other half's backoff: not "certainly not sent".
        pytest.param(
            [error(400, "BAD", "text"), "ok", error(503)], RetryPolicy(initial_wait=10.0), 0.0, True, id="isolation"
        ),
    ],
)
def test_a_batch_the_close_cuts_short_is_outcome_unknown_only_if_a_request_may_have_got_through(
    answers: list[Any], policy: RetryPolicy, latency: float, unknown: bool
) -> None:
    # A journal keeps "unknown" messages from being resent: a batch that certainly sent nothing
    # must not be marked so, or a resumed job never delivers it.
    queue = [timeout_error() if a == "timeout" else a for a in answers]

    def respond(messages: list[dict[str, Any]], n: int) -> Any:
        answer = queue.pop(0) if queue else "ok"
        return ok_for(messages) if answer == "ok" else answer

    async def main() -> list[Result]:
        c = make(FakeTransport(respond, latency=latency), batch_size=4, close_timeout=0.0, retry=policy)
        c._sender._rng = random.Random(0)  # its first wait is well past the close
        got: list[Result] = []
        task = asyncio.create_task(drain(c.stream([msg(i) for i in range(4)]), got))
        await asyncio.sleep(0.01)
        await c.aclose()
        await task
        return got

    got = run_virtual(main())
    assert len(got) == 4
    cut = [r for r in got if isinstance(r.error, ClientClosedError)]
    assert cut
    assert all(r.outcome_unknown is unknown for r in cut)

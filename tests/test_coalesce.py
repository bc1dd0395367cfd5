"""Concurrent single sends share batches; each caller keeps its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cascade_async import BadRequestError, CascadeClient, CascadeError, Message, Result

from .support import FakeTransport, error, msg, ok_for, run_virtual


def make(transport: FakeTransport, **kw: Any) -> CascadeClient:
    kw.setdefault("rate_limit", None)
    return CascadeClient(api_key="k", transport=transport, **kw)


def test_concurrent_sends_share_batches_and_each_gets_its_own_result() -> None:
    t = FakeTransport(latency=0.05)

    async def main() -> list[Result]:
        async with make(t, batch_size=100) as c:
            return await asyncio.gather(*(c.send(msg(i)) for i in range(1000)))

    results = run_virtual(main())
    assert len(t.calls) == 10
    assert [r.tracking_id for r in results] == [f"m{i}" for i in range(1000)]
    assert all(r.message_id == f"mid-m{i}" for i, r in enumerate(results))


def test_a_lone_send_waits_only_the_short_linger() -> None:
    t = FakeTransport()

    async def main() -> None:
        async with make(t, send_linger=0.002, linger=5.0) as c:
            await c.send(msg(1))

    run_virtual(main())
    assert t.calls[0][0] == pytest.approx(0.002, abs=1e-6)


def test_linger_zero_sends_on_the_next_loop_iteration() -> None:
    t = FakeTransport()

    async def main() -> None:
        async with make(t, send_linger=0) as c:
            await asyncio.gather(*(c.send(msg(i)) for i in range(5)))

    run_virtual(main())
    assert t.batches == [[f"m{i}" for i in range(5)]]
    assert t.calls[0][0] < 1e-6


def test_one_bad_message_fails_only_its_caller() -> None:
    def respond(messages: list[dict[str, Any]], n: int) -> Any:
        if any(m["toPhone"].endswith("999") for m in messages):
            return error(400, "INVALID_PHONE", "toPhone")
        return ok_for(messages)

    t = FakeTransport(respond)

    async def main() -> list[Any]:
        async with make(t, batch_size=50) as c:
            calls = [c.send(msg(i, toPhone="+380501234999" if i == 7 else "+380501234567")) for i in range(20)]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run_virtual(main())
    assert isinstance(outcomes[7], BadRequestError)
    assert outcomes[7].code == "INVALID_PHONE"
    assert all(isinstance(o, Result) and o.ok for i, o in enumerate(outcomes) if i != 7)


def test_a_caller_cancelled_before_the_batch_leaves_is_not_sent() -> None:
    t = FakeTransport()

    async def main() -> list[Any]:
        async with make(t, send_linger=1.0) as c:
            tasks = [asyncio.create_task(c.send(msg(i))) for i in range(5)]
            await asyncio.sleep(0.5)
            tasks[2].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = run_virtual(main())
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert t.batches == [["m0", "m1", "m3", "m4"]]
    assert all(isinstance(o, Result) for i, o in enumerate(outcomes) if i != 2)


def test_a_caller_cancelled_in_flight_does_not_disturb_the_others() -> None:
    t = FakeTransport(latency=1.0)

    async def main() -> list[Any]:
        async with make(t) as c:
            tasks = [asyncio.create_task(c.send(msg(i))) for i in range(5)]
            await asyncio.sleep(0.5)
            assert t.in_flight == 1
            tasks[0].cancel()
            return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = run_virtual(main())
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert [o.tracking_id for o in outcomes[1:]] == ["m1", "m2", "m3", "m4"]
    assert len(t.calls) == 1


def test_the_same_id_from_two_callers_is_sent_for_each() -> None:
    t = FakeTransport()

    async def main() -> tuple[Result, Result, Result]:
        async with make(t) as c:
            return await asyncio.gather(c.send(msg(1)), c.send(msg(1, text="second")), c.send(msg(2)))

    results = run_virtual(main())
    assert [r.tracking_id for r in results] == ["m1", "m1", "m2"]
    assert t.batches == [["m1", "m2"], ["m1"]]


def test_coalescing_can_be_switched_off() -> None:
    t = FakeTransport()

    async def main() -> None:
        async with make(t, coalesce=False) as c:
            await asyncio.gather(*(c.send(msg(i)) for i in range(7)))

    run_virtual(main())
    assert len(t.calls) == 7


def test_aclose_flushes_queued_sends() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        c = make(t, send_linger=60.0)
        tasks = [asyncio.create_task(c.send(msg(i))) for i in range(3)]
        await asyncio.sleep(0)
        await c.aclose()
        return await asyncio.gather(*tasks)

    results = run_virtual(main())
    assert [r.tracking_id for r in results] == ["m0", "m1", "m2"]
    assert t.calls[0][0] < 1.0


def test_aclose_fails_sends_still_stuck_after_the_deadline() -> None:
    t = FakeTransport(latency=3600.0)

    async def main() -> list[Any]:
        c = make(t, close_timeout=5.0)
        tasks = [asyncio.create_task(c.send(msg(i))) for i in range(3)]
        await asyncio.sleep(1)
        await c.aclose()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return outcomes

    outcomes = run_virtual(main())
    for o in outcomes:
        assert isinstance(o, CascadeError)
        assert "closed" in str(o)
        assert o.outcome_unknown


def test_send_after_close_is_a_runtime_error() -> None:
    async def main() -> None:
        c = make(FakeTransport())
        await c.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await c.send(Message.from_dict(msg(1)))

    run_virtual(main())

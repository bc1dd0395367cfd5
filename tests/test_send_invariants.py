"""Concurrent send() calls under any faults, cancellations, timeouts and a close at any moment: every
call ends, none is sent after its caller gave up, and an answer is never wrong about delivery."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_async import CascadeClient, CascadeError, RateLimit, Result, RetryPolicy
from cascade_async import TimeoutError as SendTimeout

from .support import FakeTransport, fault_answer, msg, run_virtual

OUTCOMES = ["ok", "ok", "ok", "ok", "400", "429", "500", "timeout", "refused", "lost", "slow"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_every_send_ends_none_leaves_after_its_caller_gave_up_and_none_is_called_failed_that_was_taken(
    seed: int,
) -> None:
    rnd = random.Random(seed)
    taken: set[str] = set()

    def respond(messages: list[dict[str, Any]], k: int) -> Any:
        ids = [m["id"] for m in messages]
        outcome = rnd.choice(OUTCOMES)
        if outcome in ("ok", "lost", "slow"):
            taken.update(ids)
        return fault_answer(outcome, messages, 5.0, 0.5, "BAD", "toPhone", delay=rnd.uniform(0, 5))

    transport = FakeTransport(respond, latency=rnd.choice([0.0, 0.1, 1.0]))
    ended: dict[int, tuple[str, Result | BaseException | None, float]] = {}

    async def main() -> int:
        c = CascadeClient(
            api_key="k",
            transport=transport,
            rate_limit=rnd.choice([None, RateLimit(requests_per_second=5, burst=2)]),
            batch_size=rnd.randint(1, 5),
            max_in_flight=rnd.randint(1, 3),
            send_timeout=rnd.choice([None, 0.5, 2.0, 5.0]),
            send_linger=rnd.choice([0.0, 0.002, 0.5]),
            close_timeout=rnd.choice([0.0, 1.0, 10.0]),
            retry=RetryPolicy(initial_wait=0.2),
        )
        loop = asyncio.get_running_loop()

        async def one(i: int) -> None:
            try:
                ended[i] = ("result", await c.send(msg(i)), loop.time())
            except asyncio.CancelledError:
                ended[i] = ("cancelled", None, loop.time())
                raise
            except CascadeError as exc:
                ended[i] = ("error", exc, loop.time())

        tasks = []
        for i in range(40):
            tasks.append(asyncio.ensure_future(one(i)))
            if rnd.random() < 0.3:
                await asyncio.sleep(rnd.uniform(0, 0.3))
        for task in tasks:
            if rnd.random() < 0.15:
                loop.call_later(rnd.uniform(0, 2), task.cancel)
        await asyncio.sleep(rnd.uniform(0, 6))
        await c.aclose()
        _, pending = await asyncio.wait(tasks, timeout=3600)
        for task in pending:
            task.cancel()
        return len(pending)

    assert run_virtual(main()) == 0  # every call ended after the close
    assert len(ended) == 40
    left_at: dict[str, list[float]] = {}
    for at, _, _, messages in transport.calls:
        for m in messages:
            left_at.setdefault(m["id"], []).append(at)
    for i, (how, outcome, at) in ended.items():
        tid = f"m{i}"
        if isinstance(outcome, Result):
            assert tid in taken
        gave_up = how == "cancelled" or (isinstance(outcome, SendTimeout) and "send_timeout" in str(outcome))
        if gave_up:
            assert all(t <= at for t in left_at.get(tid, [])), f"{tid} was sent after its caller gave up"
        if isinstance(outcome, CascadeError) and not outcome.outcome_unknown:
            assert tid not in taken, f"{tid} was taken, yet its caller heard a certain failure: {outcome!r}"

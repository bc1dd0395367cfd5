"""Whatever the network does, and however a journaled job is cut short, across runs: the journal
never calls a message the provider took certainly unsent, and no run sends it again unasked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_async import CascadeClient, CascadeError, Journal, RawResponse, Result, RetryPolicy, Status

from .support import FakeTransport, fault_answer, msg, run_virtual

TAKING = {"ok", "partial", "lost", "slow", "504"}  # the provider took the request's messages
OUTCOMES = sorted(TAKING | {"400", "429", "500", "503", "timeout", "refused"})
ENDINGS = ["whole", "cancelled", "closed"]  # cancelled: as a kill leaves it (answers never recorded)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 40),
    runs=st.lists(st.tuples(st.sampled_from(ENDINGS), st.booleans()), min_size=1, max_size=4),
)
def test_a_journaled_job_over_any_faults_and_cuts_never_calls_a_taken_message_unsent_nor_resends_it_unasked(
    tmp_path: Path, seed: int, n: int, runs: list[tuple[str, bool]]
) -> None:
    rnd = random.Random(seed)
    db = str(tmp_path / f"job-{seed}-{n}-{len(runs)}.db")
    taken: dict[str, int] = {}

    def respond(messages: list[dict[str, Any]], k: int) -> Any:
        ids = [m["id"] for m in messages]
        outcome = rnd.choice(OUTCOMES + ["ok"] * 4)
        if outcome in TAKING:
            for tid in ids:
                taken[tid] = taken.get(tid, 0) + 1
        if outcome == "partial":
            acks = [{"messageId": f"x-{tid}", "trackinId": tid} for tid in ids[:-1]]
            return RawResponse(200, {}, json.dumps(acks).encode())
        return fault_answer(outcome, messages, 3.0, 0.3, delay=rnd.uniform(0, 3))

    async def run(ending: str, resend: bool) -> list[Result]:
        c = CascadeClient(
            api_key="k",
            transport=FakeTransport(respond, latency=rnd.choice([0.0, 0.2])),
            rate_limit=None,
            batch_size=rnd.randint(1, 7),
            max_in_flight=rnd.randint(1, 3),
            close_timeout=rnd.choice([0.0, 1.0]),
            retry=RetryPolicy(initial_wait=0.1, max_attempts=rnd.randint(1, 3)),
        )
        got: list[Result] = []
        with Journal(db) as journal:

            async def consume() -> None:
                with contextlib.suppress(CascadeError):
                    async for r in journal.stream(c, [msg(i) for i in range(n)], resend_unknown=resend):
                        got.append(r)

            task = asyncio.ensure_future(consume())
            if ending != "whole":
                await asyncio.sleep(rnd.uniform(0, 2))
                if ending == "cancelled":
                    task.cancel()
                else:
                    await c.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await c.aclose()
        return got

    for ending, resend in runs:
        before = dict(taken)
        got = run_virtual(run(ending, resend))
        assert len({r.tracking_id for r in got}) == len(got)  # one result per id
        rows = dict(sqlite3.connect(db).execute("SELECT tracking_id, status || ':' || unknown FROM outcomes"))
        for tid in taken:  # taken: accepted, rejected, or of unknown outcome; never "certainly not sent"
            assert rows[tid].split(":")[0] in ("accepted", "pending", "rejected") or rows[tid] == "failed:1", tid
        for r in got:
            if r.tracking_id in taken and r.status is Status.FAILED:
                assert r.outcome_unknown, r
        if not resend:
            for tid, times in before.items():
                assert taken[tid] == times or rows[tid].startswith("rejected"), f"{tid} sent again unasked"

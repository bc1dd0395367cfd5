"""A journaled job cut short: what it took from its input is answered, and what it may have sent is not resent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async import (
    CascadeClient,
    ClientClosedError,
    EndpointError,
    Journal,
    JournalError,
    Result,
    RetryPolicy,
    Status,
    TransportError,
)

from .support import FakeTransport, error, msg, ok_for, run_virtual, scripted, timeout_error


def client(transport: FakeTransport, **kw: Any) -> CascadeClient:
    options: dict[str, Any] = {"batch_size": 10, "max_in_flight": 1, "rate_limit": None}
    options.update(kw)
    return CascadeClient(api_key="k", transport=transport, **options)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_every_input_a_journaled_job_took_from_its_source_gets_a_result_when_the_client_closes(
    tmp_path: Path, kind: str
) -> None:
    # The journal reads its input a chunk of 1,000 at a time (an async one is read ahead too): a
    # one-shot source (a queue, a cursor) must not lose what was taken from it when the client closes.
    db = str(tmp_path / "job.db")
    taken: list[str] = []

    def rows() -> Iterator[dict[str, Any]]:
        for i in range(3000):
            taken.append(f"m{i}")
            yield msg(i)

    async def async_rows() -> AsyncIterator[dict[str, Any]]:
        for row in rows():
            yield row

    async def first_run() -> list[Result]:
        c = client(FakeTransport(latency=1.0), close_timeout=0.0)
        got: list[Result] = []
        with Journal(db) as journal:

            async def consume() -> None:
                with contextlib.suppress(ClientClosedError):
                    async for r in journal.stream(c, rows() if kind == "sync" else async_rows()):
                        got.append(r)

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(2.5)
            await c.aclose()
            await task
        return got

    got = run_virtual(first_run())
    assert len(taken) >= 1000  # the job took more than it sent
    assert sorted(r.tracking_id for r in got) == sorted(taken)  # each once
    accepted = {r.tracking_id for r in got if r.ok}
    unknown = {r.tracking_id for r in got if r.outcome_unknown}

    async def second_run() -> tuple[list[Result], FakeTransport]:
        transport = FakeTransport()
        async with client(transport) as c:
            with Journal(db) as journal:
                return [r async for r in journal.stream(c, [msg(i) for i in range(3000)])], transport

    results, transport = run_virtual(second_run())
    sent = [tid for batch in transport.batches for tid in batch]
    assert len(sent) == len(set(sent))
    assert not set(sent) & (accepted | unknown)  # nothing that may have arrived goes again
    assert {r.tracking_id for r in results if r.status is Status.ACCEPTED} == {f"m{i}" for i in range(3000)} - unknown


def test_a_journaled_job_cancelled_after_an_earlier_job_met_a_wrong_endpoint_keeps_its_requests_unknown(
    tmp_path: Path,
) -> None:
    # The first job meets a proxy's 404 and stops. The next one (same client) is cancelled with a
    # request out: that request may have got through, so it must read as unknown, not as unsent.
    def respond(messages: list[dict[str, Any]], n: int) -> Any:
        return error(404) if n == 1 else asyncio.sleep(100, ok_for(messages))

    async def main() -> list[str]:
        c = client(FakeTransport(respond))
        with Journal(str(tmp_path / "first.db")) as journal, contextlib.suppress(EndpointError):
            async for _ in journal.stream(c, [msg(i) for i in range(5)]):
                pass
        with Journal(str(tmp_path / "second.db")) as journal:

            async def consume() -> None:
                async for _ in journal.stream(c, [msg(i) for i in range(5)]):
                    pass

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            unknown = journal.unknown()
        await c.aclose()
        return unknown

    assert sorted(run_virtual(main())) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("first", ["answer lost", "cut short"])
@pytest.mark.parametrize("resend", ["503", "refused"])
def test_a_resent_message_of_unknown_outcome_whose_resend_fails_for_certain_stays_unknown(
    tmp_path: Path, first: str, resend: str
) -> None:
    # Run 1 may have delivered m0; run 2 resends it (resend_unknown) and that request certainly fails.
    # Run 1's request may still have arrived: run 2 must say so, and run 3 must not send it unasked.
    db = str(tmp_path / "job.db")

    async def run(transport: FakeTransport, cut_short: bool = False, **kw: Any) -> list[Result]:
        c = client(transport, retry=RetryPolicy(max_attempts=1))
        got: list[Result] = []
        with Journal(db) as journal:

            async def consume() -> None:
                async for r in journal.stream(c, [msg(0)], **kw):
                    got.append(r)

            task = asyncio.ensure_future(consume())
            if cut_short:  # as a kill would: the request is out, its answer never recorded
                await asyncio.sleep(1)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await c.aclose()
        return got

    if first == "answer lost":
        run_virtual(run(scripted(timeout_error())))
    else:
        run_virtual(run(FakeTransport(latency=100), cut_short=True))
    failure = error(503) if resend == "503" else TransportError("connection refused")
    (second,) = run_virtual(run(scripted(failure), resend_unknown=True))
    assert second.status is Status.FAILED
    assert second.outcome_unknown
    third_transport = FakeTransport()
    (third,) = run_virtual(run(third_transport))
    assert third_transport.calls == []
    assert third.outcome_unknown
    with Journal(db, sender=False) as journal:
        assert journal.unknown() == ["m0"]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("fail_at", [0, 7, 999, 1000, 1500])
def test_a_journaled_job_whose_input_fails_sends_everything_read_before_the_failure(
    tmp_path: Path, kind: str, fail_at: int
) -> None:
    # The journal reads a sync input 1,000 at a time: the part of a chunk read before the input's
    # error was dropped (no result, never sent), where a job without a journal sends it first.
    def rows() -> Iterator[dict[str, Any]]:
        for i in range(3000):
            if i == fail_at:
                raise OSError("the source broke")
            yield msg(i)

    async def async_rows() -> AsyncIterator[dict[str, Any]]:
        for row in rows():
            yield row

    async def main() -> tuple[list[Result], BaseException | None]:
        got: list[Result] = []
        async with client(FakeTransport()) as c:
            with Journal(str(tmp_path / "job.db")) as journal:
                try:
                    async for r in journal.stream(c, rows() if kind == "sync" else async_rows()):
                        got.append(r)
                except OSError as exc:
                    return got, exc
        return got, None

    got, failure = run_virtual(main())
    assert isinstance(failure, OSError)
    assert all(r.ok for r in got)
    assert sorted(r.tracking_id for r in got) == sorted(f"m{i}" for i in range(fail_at))


def test_a_second_stream_of_a_journal_still_sending_is_refused_instead_of_sending_everything_twice(
    tmp_path: Path,
) -> None:
    # Each stream read the rows the other had not settled yet as unsent: two concurrent streams of
    # one journal sent every message twice. One at a time; the next may start once the first ended.
    transport = FakeTransport(latency=0.5)

    async def main() -> tuple[tuple[list[Result] | BaseException, list[Result] | BaseException], list[Result]]:
        async with client(transport) as c:
            with Journal(str(tmp_path / "job.db")) as journal:

                async def job() -> list[Result]:
                    return [r async for r in journal.stream(c, [msg(i) for i in range(50)])]

                both = await asyncio.gather(job(), job(), return_exceptions=True)
                after = await job()  # the first one has ended: a new run is fine
        return both, after

    (first, second), after = run_virtual(main())
    assert isinstance(first, list)
    assert all(r.ok for r in first)
    assert isinstance(second, JournalError)
    sent = [tid for batch in transport.batches for tid in batch]
    assert sorted(sent) == sorted(f"m{i}" for i in range(50))
    assert all(r.from_journal for r in after)

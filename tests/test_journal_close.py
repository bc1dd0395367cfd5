"""A journaled job cut short: what it took from its input is answered, and what it may have sent is not resent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async import CascadeClient, ClientClosedError, EndpointError, Journal, Result, Status

from .support import FakeTransport, error, msg, ok_for, run_virtual


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

"""A template job closed at any await keeps its promise: every row taken from the input gets exactly
one result, including the rows of a list still waiting for the pool's next block of ids."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async import (
    BadLine,
    CascadeClient,
    ClientClosedError,
    ErrorCode,
    Journal,
    LocalIdAllocator,
    Status,
    Template,
    ValidationError,
    VariablePool,
)
from cascade_async._templates import RowLists

from .support import FakeTransport, ok_for, run_virtual

LINKED = Template("Hi {name}! Track it: {link:short_url}")


class SlowAllocator:
    """Ids from 1 up; from the ``slow_from``-th block on, each block waits (as a Redis round trip
    may) until ``release`` is set."""

    def __init__(self, slow_from: int) -> None:
        self.next = 1
        self.calls = 0
        self.slow_from = slow_from
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def allocate(self, count: int) -> range:
        self.calls += 1
        if self.calls >= self.slow_from:
            self.waiting.set()
            await self.release.wait()
        start, self.next = self.next, self.next + count
        return range(start, start + count)

    def state(self) -> dict[str, Any]:
        return {"kind": "test"}


def answering() -> FakeTransport:
    """Accepts every message and every variable upload."""
    return FakeTransport(lambda body, n: ok_for(body) if isinstance(body, list) else ok_for([]))


def make_client(batch_size: int = 20, transport: FakeTransport | None = None) -> CascadeClient:
    """A client of the fake server that accepts everything, sending partial batches at once."""
    return CascadeClient(
        api_key="k", transport=transport or answering(), rate_limit=None, batch_size=batch_size, linger=0.01
    )


def rows(n: int) -> list[dict[str, str]]:
    return [{"toPhone": f"+38050{i:07d}", "name": f"N{i}", "link": f"https://shop.example/{i}"} for i in range(n)]


def test_rows_waiting_for_the_next_block_of_ids_when_the_client_is_closed_each_get_a_result() -> None:
    n = 50

    async def main() -> tuple[list[Any], int]:
        allocator = SlowAllocator(slow_from=2)
        pool = VariablePool(allocator, block_size=10)  # the first block covers rows 1-10
        results: list[Any] = []
        client = make_client()
        stream = client.stream(LINKED.messages(rows(n), from_name="S", message_type="promo", pool=pool))

        async def consume() -> None:
            try:
                async for r in stream:
                    results.append(r)
            except ClientClosedError:
                pass

        consumer = asyncio.ensure_future(consume())
        await allocator.waiting.wait()  # row 11 waits for its id: rows 11-20 of the list are unrendered
        await asyncio.sleep(0.5)
        await client.aclose()
        await consumer
        return results, allocator.calls

    results, calls = run_virtual(main())
    assert calls == 2
    ids = [r.tracking_id for r in results]
    assert len(ids) == len(set(ids))  # nothing twice
    assert sorted(ids) == sorted(f"row-{i}" for i in range(1, 21))  # the rows taken: the first list of 20
    assert {r.status for r in results} == {Status.FAILED}
    assert all(isinstance(r.error, ClientClosedError) and not r.error.outcome_unknown for r in results)


class FailingAllocator(SlowAllocator):
    """As ``SlowAllocator``, but the slow block fails (Redis went away)."""

    async def allocate(self, count: int) -> range:
        self.calls += 1
        if self.calls >= self.slow_from:
            raise ConnectionError("Redis is gone")
        start, self.next = self.next, self.next + count
        return range(start, start + count)


def test_rows_whose_ids_cannot_be_had_fail_with_the_reason_and_the_rows_before_them_are_sent() -> None:
    async def main() -> tuple[list[Any], BaseException | None]:
        pool = VariablePool(FailingAllocator(slow_from=2), block_size=10)
        results: list[Any] = []
        raised: BaseException | None = None
        async with make_client() as client:
            try:
                async for r in client.stream(LINKED.messages(rows(50), from_name="S", message_type="promo", pool=pool)):
                    results.append(r)
            except Exception as exc:
                raised = exc
        return results, raised

    results, raised = run_virtual(main())
    assert isinstance(raised, ConnectionError)  # the input failed: raised after what was read before it
    by_id = {r.tracking_id: r for r in results}
    assert len(by_id) == len(results) == 20  # the first list of 20 rows was taken from the input
    assert [by_id[f"row-{i}"].status for i in range(1, 11)] == [Status.ACCEPTED] * 10
    unrendered = [by_id[f"row-{i}"] for i in range(11, 21)]
    assert {r.status for r in unrendered} == {Status.FAILED}
    assert all("Redis is gone" in str(r.error) for r in unrendered)
    assert not any(r.error is not None and r.error.outcome_unknown for r in unrendered)


def test_an_unreadable_line_among_the_rows_waiting_for_ids_is_rejected_with_its_line_not_failed() -> None:
    unreadable = ValidationError("not valid JSON", field=None, tracking_id=None, code=ErrorCode.UNPARSEABLE, line=15)
    bad = BadLine(15, unreadable)
    given: list[Any] = [*rows(14), bad, *rows(50)[15:]]

    async def main() -> list[Any]:
        pool = VariablePool(FailingAllocator(slow_from=2), block_size=10)
        results: list[Any] = []

        async def read(client: CascadeClient) -> None:
            async for r in client.stream(LINKED.messages(given, from_name="S", message_type="promo", pool=pool)):
                results.append(r)

        async with make_client() as client:
            with pytest.raises(ConnectionError):
                await read(client)
        return results

    by_id = {r.tracking_id: r for r in run_virtual(main())}
    assert len(by_id) == 20
    line = by_id["row-15"]  # row 15 never needed an id: it is refused for what it is
    assert line.status is Status.REJECTED
    assert isinstance(line.error, ValidationError)
    assert line.error.line == 15
    assert by_id["row-16"].status is Status.FAILED


@pytest.mark.parametrize("resumed", [False, True], ids=["a first run", "a run resuming an earlier one"])
def test_a_journaled_template_job_closed_mid_list_gives_every_row_it_took_a_result(
    tmp_path: Path, resumed: bool
) -> None:
    taken: list[str] = []
    pool = VariablePool(LocalIdAllocator())  # both runs give a link the same id (the CLI replays it)

    async def lists() -> AsyncIterator[list[dict[str, str]]]:  # a reader's lists, as the CLI's
        for k in range(5):
            part = rows(10_000)[k * 2000 : (k + 1) * 2000]
            taken.extend(f"row-{i}" for i in range(k * 2000 + 1, (k + 1) * 2000 + 1))
            yield part

    async def run(stop_after: int | None) -> list[Any]:
        results: list[Any] = []
        transport = FakeTransport(answering().respond, latency=0.5)
        client = make_client(100, transport)
        with Journal(str(tmp_path / "j.db")) as journal:
            items = LINKED.messages(RowLists(lists()), from_name="S", message_type="promo", pool=pool)
            try:
                async for r in journal.stream(client, items):
                    results.append(r)
                    if len(results) == stop_after:
                        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(client.aclose()))
            except ClientClosedError:
                pass
            await client.aclose()
        return results

    if resumed:
        earlier = run_virtual(run(stop_after=2500))
        assert {r.status for r in earlier} >= {Status.ACCEPTED}
        taken.clear()
    results = run_virtual(run(stop_after=3000))
    by_id = {r.tracking_id: r for r in results}
    assert len(by_id) == len(results)  # nothing twice
    assert sorted(by_id) == sorted(taken)  # each row taken from the input: the rest of a list too
    if resumed:  # a row the earlier run settled keeps that result, not "closed before it was sent"
        assert by_id["row-1"].status is Status.ACCEPTED
        assert by_id["row-1"].from_journal


def test_a_journaled_template_job_whose_ids_cannot_be_had_fails_the_rest_of_the_list_with_the_reason(
    tmp_path: Path,
) -> None:
    async def lists() -> AsyncIterator[list[dict[str, str]]]:
        yield rows(50)

    async def main() -> tuple[list[Any], BaseException | None]:
        pool = VariablePool(FailingAllocator(slow_from=2), block_size=10)
        results: list[Any] = []
        raised: BaseException | None = None
        async with make_client() as client:
            with Journal(str(tmp_path / "j.db")) as journal:
                items = LINKED.messages(RowLists(lists()), from_name="S", message_type="promo", pool=pool)
                try:
                    async for r in journal.stream(client, items):
                        results.append(r)
                except Exception as exc:
                    raised = exc
        return results, raised

    results, raised = run_virtual(main())
    assert isinstance(raised, ConnectionError)
    by_id = {r.tracking_id: r for r in results}
    assert len(by_id) == len(results) == 50  # the list of 50 was taken from the input
    assert [by_id[f"row-{i}"].status for i in range(1, 11)] == [Status.ACCEPTED] * 10
    rest = [by_id[f"row-{i}"] for i in range(11, 51)]
    assert {r.status for r in rest} == {Status.FAILED}
    assert all("Redis is gone" in str(r.error) for r in rest)


@pytest.mark.parametrize("source", ["list", "async rows"])
@pytest.mark.parametrize("ending", ["ids cannot be had", "client closed"])
def test_a_journaled_template_job_over_plain_rows_gives_the_row_waiting_for_ids_a_result(
    tmp_path: Path, source: str, ending: str
) -> None:
    # Rows that are not a reader's lists are rendered one at a time: the row waiting for the next
    # block of ids was taken from the input, and must end with a result like every row before it.
    data = rows(30)

    async def trickle() -> AsyncIterator[dict[str, str]]:
        for row in data:
            yield row

    async def main() -> tuple[list[Any], int]:
        allocator = FailingAllocator(slow_from=2) if ending == "ids cannot be had" else SlowAllocator(slow_from=2)
        pool = VariablePool(allocator, block_size=10)
        results: list[Any] = []
        client = make_client(5)
        with Journal(str(tmp_path / "j.db")) as journal:
            items = LINKED.messages(
                data if source == "list" else trickle(), from_name="S", message_type="promo", pool=pool
            )

            async def read() -> None:
                async for r in journal.stream(client, items):
                    results.append(r)

            reading = asyncio.ensure_future(read())
            if ending == "client closed":
                await allocator.waiting.wait()  # row 11 waits for its id
                await asyncio.sleep(1.0)  # rows 1-10 are answered meanwhile
                await client.aclose()
            with contextlib.suppress(ConnectionError, ClientClosedError):
                await reading
            await client.aclose()
        return results, allocator.calls

    results, calls = run_virtual(main())
    assert calls == 2
    by_id = {r.tracking_id: r for r in results}
    assert len(by_id) == len(results)  # nothing twice
    assert [by_id[f"row-{i}"].status for i in range(1, 11)] == [Status.ACCEPTED] * 10
    waiting = by_id.get("row-11")
    assert waiting is not None  # taken from the input: it has its result
    assert waiting.status is Status.FAILED
    assert waiting.error is not None
    assert not waiting.error.outcome_unknown
    assert set(by_id) <= {f"row-{i}" for i in range(1, 31)}

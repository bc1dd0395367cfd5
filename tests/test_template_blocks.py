"""A template hands the engine its new variables a chunk at a time: plain wire dicts, each new value
once with the first chunk that uses it, uploads before use, and a failed upload that refuses only the
messages whose text uses one of its values."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from cascade_async import (
    CascadeClient,
    LocalIdAllocator,
    Personalised,
    RawResponse,
    RetryPolicy,
    Status,
    Template,
    VariablePool,
    VariableType,
)
from cascade_async._variables import PLACEHOLDER
from cascade_async.sandbox import Sandbox

from .support import FakeTransport, ok_for, run_virtual

ITEMS = "/api/items"
LINKED = Template("Hi {name}! Track it: {link:short_url}")


def row(i: int, link: str, name: str | None = None) -> dict[str, str]:
    return {"toPhone": f"+38050{i:07d}", "name": name or f"N{i}", "link": f"https://shop.example/{link}"}


def ids_in(text: str) -> set[int]:
    return {int(m.group(2)) for m in PLACEHOLDER.finditer(text)}


async def test_each_new_variable_comes_once_with_the_first_chunk_that_uses_it() -> None:
    # Rows 3 and 6 take the checked path (a "%" in a value); link "a" comes back in later chunks.
    data = [row(i, link, "50% N" if i in (3, 6) else None) for i, link in enumerate("abcadeafgb", 1)]
    pool = VariablePool(LocalIdAllocator(), block_size=2)  # a refill in the middle of chunks
    items = LINKED.messages(data, from_name="S", message_type="promo", pool=pool)
    chunks = [(chunk, fresh) async for chunk, fresh in items.blocks(3)]
    assert [len(chunk) for chunk, _ in chunks] == [3, 3, 3, 1]
    handed: dict[int, str] = {}
    for chunk, fresh in chunks:
        assert fresh is not None
        assert all(type(item) is dict for item in chunk)  # no Personalised item, no tuple per message
        new = {vid: value for run in fresh for vid, value in zip(run.ids, run.values, strict=True)}
        assert not handed.keys() & new.keys()  # each value handed over once
        handed |= new
        for item in chunk:
            assert isinstance(item, dict)
            assert ids_in(item["text"]) <= handed.keys()  # this chunk's block or an earlier one
    assert sorted(handed.values()) == sorted({r["link"] for r in data})


async def test_a_pool_that_already_holds_values_gives_personalised_items_that_still_upload(sandbox: Sandbox) -> None:
    pool = VariablePool(LocalIdAllocator())
    await pool.variable(VariableType.SHORT_URL, "https://shop.example/a")  # e.g. a resumed job's pool
    items = LINKED.messages([row(1, "a"), row(2, "b")], from_name="S", message_type="promo", pool=pool)
    got = [(chunk, fresh) async for chunk, fresh in items.blocks(10)]
    assert [fresh for _, fresh in got] == [None]
    assert all(isinstance(item, Personalised) for item in got[0][0])
    fresh_pool = VariablePool(LocalIdAllocator())
    twice = [LINKED.messages([row(i, "c")], from_name="S", message_type="promo", pool=fresh_pool) for i in (1, 2)]
    assert [fresh for _, fresh in [c async for c in twice[0].blocks(10)]] != [None]
    assert [fresh for _, fresh in [c async for c in twice[1].blocks(10)]] == [None]  # the pool is taken
    reused = LINKED.messages([row(3, "a"), row(4, "d")], from_name="S", message_type="promo", pool=pool)
    async with CascadeClient(api_key="k", base_url=sandbox.url, rate_limit=None) as c:
        report = await c.send_many(reused)
    assert report.ok, report.summary()  # the sandbox refuses a message whose variable it does not have
    assert sandbox.route_counts[ITEMS] == 1


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        pytest.param(400, Status.REJECTED, id="a refused upload rejects the messages using its values"),
        pytest.param(500, Status.FAILED, id="an upload that keeps failing leaves them failed for a resend"),
    ],
)
def test_a_failed_block_refuses_exactly_the_messages_that_use_its_values(status: int, outcome: Status) -> None:
    def respond(body: Any, n: int) -> RawResponse:
        if isinstance(body, dict) and "/c" in json.dumps(body):  # the second chunk's block: link "c"
            return RawResponse(status, {}, b'{"error": {"code": "NOPE", "message": "no"}}')
        return ok_for(body) if isinstance(body, list) else ok_for([])

    transport = FakeTransport(respond)

    async def rows() -> Any:
        yield row(1, "a")
        yield row(2, "b")
        await asyncio.sleep(1)  # the first batch uploads its block and leaves meanwhile
        yield row(3, "a")  # in the same batch as row 4, but its value is uploaded
        yield row(4, "c")

    async def main() -> dict[str, Status]:
        policy = RetryPolicy(max_attempts=2, initial_wait=0.01)
        async with CascadeClient(api_key="k", transport=transport, retry=policy, rate_limit=None, batch_size=2) as c:
            report = await c.send_many(LINKED.messages(rows(), from_name="S", message_type="promo"))
        assert report["row-4"].error is not None
        assert "could not be uploaded" in str(report["row-4"].error)
        return {tid: r.status for tid, r in report.items()}

    got = run_virtual(main())
    assert got == {"row-1": Status.ACCEPTED, "row-2": Status.ACCEPTED, "row-3": Status.ACCEPTED, "row-4": outcome}
    sent = [m["id"] for call in transport.calls if isinstance(call[3], list) for m in call[3]]
    assert sent == ["row-1", "row-2", "row-3"]
    uploads = [call[3]["variables"] for call in transport.calls if call[1].endswith(ITEMS)]
    assert [len(body) for body in uploads] == [2] + [1] * (1 if status == 400 else 2)


async def test_rows_read_before_the_rows_fail_go_out_with_their_new_variables_uploaded_first(sandbox: Sandbox) -> None:
    async def rows() -> Any:
        for i in range(1, 6):
            yield row(i, f"l{i}")  # a new link on every row
        raise OSError("the file went away")

    items = LINKED.messages(rows(), from_name="S", message_type="promo")
    results: list[Any] = []

    async def consume(c: CascadeClient) -> None:
        async for r in c.stream(items):
            results.append(r)

    async with CascadeClient(api_key="k", base_url=sandbox.url, rate_limit=None, batch_size=3) as c:
        with pytest.raises(OSError, match="went away"):
            await consume(c)
    # The last two rows were held (a chunk of 3 went first) when the rows failed: they still go,
    # and the sandbox, which refuses a placeholder whose variable it does not have, took them.
    assert len({r.tracking_id for r in results}) == 5
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]

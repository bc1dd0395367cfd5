"""A template's new variables travel as ids and values, not ``Variable`` objects: the pool keeps one
id per value and hands over its new ones in bulk, and their upload is encoded in one go, to the
same bytes as before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cascade_async import CascadeClient, LocalIdAllocator, RawResponse, Template, Variable, VariablePool, VariableType
from cascade_async._upload_blocks import BlockUploads
from cascade_async._variables import PLACEHOLDER, VariableRun, upload_body, variable_batches

from .support import FakeTransport, ok_for, run_virtual

NAME, URL, SHORT = VariableType.NAME, VariableType.URL, VariableType.SHORT_URL
ITEMS = "/api/items"


@pytest.mark.parametrize(
    "runs",
    [
        pytest.param([VariableRun(SHORT, [5, 6], ["https://a.example/1", "https://a.example/2"])], id="one run"),
        pytest.param(
            [
                VariableRun(URL, [2**40], ['https://b.example/?q="x"&r=\\']),
                VariableRun(SHORT, [7], ["https://é.example/🎉"]),
            ],
            id="quotes, backslashes and non-ASCII, two types",
        ),
        pytest.param([VariableRun(NAME, [1, 3], ["Ann", "Олена"])], id="names"),
        pytest.param([VariableRun(SHORT, [], [])], id="an empty run"),
    ],
)
def test_a_bulk_upload_body_is_the_bytes_the_variables_encode_to(runs: list[VariableRun]) -> None:
    variables = [var for run in runs for var in run.variables()]
    assert upload_body(runs) == next(variable_batches(variables), b'{"variables":[]}')


async def test_the_pool_hands_over_each_new_value_once_and_keeps_its_id() -> None:
    pool = VariablePool(LocalIdAllocator(), block_size=3)
    assert pool.claim_fresh()
    await pool.refill()
    a = pool.new_id(SHORT, "https://a.example/")
    b = pool.new_id(URL, "https://b.example/")
    assert a is not None
    assert b is not None
    assert pool.ids(SHORT) == {"https://a.example/": a}
    assert [(r.type, r.ids, r.values) for r in pool.take_fresh()] == [
        (URL, [b], ["https://b.example/"]),
        (SHORT, [a], ["https://a.example/"]),
    ]
    assert pool.take_fresh() == []
    assert pool.get(SHORT, "https://a.example/") == Variable(a, SHORT, "https://a.example/")  # no new id
    c = pool.new_id(SHORT, "https://c.example/")
    assert pool.new_id(SHORT, "https://d.example/") is None  # the block of 3 is spent
    await pool.refill()
    d = pool.new_id(SHORT, "https://d.example/")
    assert [(r.ids, r.values) for r in pool.take_fresh()] == [([c, d], ["https://c.example/", "https://d.example/"])]
    # The journal's record is its own tail: every assignment once, whatever take_fresh took.
    expected = [[a, "short_url", "https://a.example/"], [b, "url", "https://b.example/"]]
    expected += [[c, "short_url", "https://c.example/"], [d, "short_url", "https://d.example/"]]
    assert sorted(pool.changes()["variables"]) == sorted(expected)
    assert pool.changes()["variables"] == []
    assert VariablePool.restore(pool.snapshot()).ids(SHORT) == pool.ids(SHORT)


async def test_a_value_the_pool_refuses_takes_no_id() -> None:
    pool = VariablePool(LocalIdAllocator())
    await pool.refill()
    with pytest.raises(ValueError, match="http"):
        pool.new_id(SHORT, "ftp://a.example/")
    assert (len(pool), pool.take_fresh()) == (0, [])


def test_the_same_link_keeps_its_id_across_chunks_and_is_uploaded_once() -> None:
    transport = FakeTransport(lambda body, n: ok_for(body) if isinstance(body, list) else ok_for([]))
    template = Template("Hi {name}: {link:short_url}")
    links = ["a", "b", "a", "c", "b", "a", "d"]
    data = [
        {"toPhone": f"+38050{i:07d}", "name": f"N{i}", "link": f"https://s.example/{x}"} for i, x in enumerate(links)
    ]

    async def main() -> None:
        async with CascadeClient(api_key="k", transport=transport, rate_limit=None, batch_size=2) as c:
            report = await c.send_many(template.messages(data, from_name="S", message_type="promo"))
        assert report.ok, report.summary()

    run_virtual(main())
    uploaded: dict[int, str] = {}
    for _, url, _, body in transport.calls:
        if url.endswith(ITEMS):
            for var in body["variables"]:
                assert var["id"] not in uploaded  # each id once
                uploaded[var["id"]] = var["value"]
        else:
            for m in body:
                [ph] = PLACEHOLDER.findall(m["text"])
                assert int(ph[1]) in uploaded  # uploaded before the batch that uses it
                assert uploaded[int(ph[1])] == data[int(m["toPhone"][-7:])]["link"]
    assert sorted(uploaded.values()) == sorted({r["link"] for r in data})


def _uploads(block: int, respond: Any = None) -> tuple[FakeTransport, Any]:
    transport = FakeTransport(respond or (lambda body, n: ok_for([])))

    async def make(client: CascadeClient) -> BlockUploads:
        return BlockUploads(client._sender, linger=0.0, block=block)

    return transport, make


def test_pending_runs_go_up_oldest_first_in_bodies_of_at_most_a_block() -> None:
    transport, make = _uploads(block=1000)
    runs = [
        VariableRun(SHORT, list(range(s, s + 700)), [f"https://a.example/{i}" for i in range(s, s + 700)])
        for s in (1, 701, 1401)
    ]
    runs.append(VariableRun(URL, [5000], ["https://u.example/"]))

    async def main() -> None:
        async with CascadeClient(api_key="k", transport=transport, rate_limit=None) as c:
            uploads = await make(c)
            uploads.add(runs)
            uploads.close()
            assert await uploads.ensure([]) == ([], [])
            assert uploads.requests == 3

    run_virtual(main())
    bodies = [call[3]["variables"] for call in transport.calls]
    assert [len(b) for b in bodies] == [1000, 1000, 101]
    sent = [v for b in bodies for v in b]
    assert sent == [v for run in runs for v in _wire(run)]


def _wire(run: VariableRun) -> list[dict[str, Any]]:
    return [{"id": i, "type": run.type.value, "value": v} for i, v in zip(run.ids, run.values, strict=True)]


def test_a_cancelled_upload_puts_its_values_back_first_and_the_next_batch_uploads_them() -> None:
    started = asyncio.Event()

    async def slow(body: Any, n: int) -> RawResponse:
        if n == 1:
            started.set()
            await asyncio.sleep(3600)
        return ok_for([])

    transport, make = _uploads(block=2, respond=slow)

    async def main() -> None:
        async with CascadeClient(api_key="k", transport=transport, rate_limit=None) as c:
            uploads = await make(c)
            uploads.add(
                [VariableRun(SHORT, [1, 2, 3], ["https://a.example/1", "https://a.example/2", "https://a.example/3"])]
            )
            first = asyncio.create_task(uploads.ensure([]))
            await started.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            uploads.close()
            assert await uploads.ensure([]) == ([], [])

    run_virtual(main())
    assert [[v["id"] for v in call[3]["variables"]] for call in transport.calls] == [[1, 2], [1, 2], [3]]

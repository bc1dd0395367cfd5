"""A template job refuses repeated tracking ids itself, in (almost) no memory per derived id."""

from __future__ import annotations

import gc
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_async import CascadeClient, ErrorCode, Rejected, Status, Template
from cascade_async._admission import is_duplicate
from cascade_async._batching import Batch
from cascade_async._template_ids import HashSet64, RowIds

from .support import FakeTransport, make, msg, run_virtual, scripted
from .test_templates import PHONE, collect

DUP = ErrorCode.DUPLICATE_ID


def rows(*ids: Any) -> list[dict[str, Any]]:
    """One row per id; None: the row has no id (it gets ``f-{row}``)."""
    return [{"toPhone": PHONE, "name": "A"} | ({} if tid is None else {"id": tid}) for tid in ids]


@pytest.mark.parametrize(
    ("ids", "refused"),
    [
        pytest.param((None, None, None), [], id="derived ids never repeat"),
        pytest.param(("a", "b", "a"), [3], id="an id column repeats a value"),
        pytest.param((None, "f-1"), [2], id="a column id spells an earlier row's derived id"),
        pytest.param(("f-2", None), [2], id="a column id claims a later row's derived id"),
        pytest.param(("f-3", "x", None, None), [3], id="a claim two rows ahead"),
        pytest.param(("f-1", None), [], id="a row's own derived id as its column id"),
        pytest.param((None, "f-01", "f-1x", "g-1"), [], id="look-alikes of a derived id are other ids"),
        pytest.param(("x", None, "f-1"), [], id="row 1 had a column id, so f-1 is free"),
        pytest.param((5, "5"), [2], id="a number and its text are one id"),
        pytest.param(("", None, ""), [], id="an empty cell is no id"),
        pytest.param(("é", "e\u0301"), [], id="unicode ids compare as written"),
    ],
)
async def test_a_repeated_tracking_id_is_refused_where_it_repeats(ids: tuple[Any, ...], refused: list[int]) -> None:
    items = await collect(Template("Hi {name}"), rows(*ids), id_prefix="f")
    got = [n for n, item in enumerate(items, 1) if isinstance(item, Rejected) and item.error.code == DUP]
    assert got == refused
    assert all(not isinstance(item, Rejected) for n, item in enumerate(items, 1) if n not in refused)


async def test_a_rejected_row_still_uses_its_id() -> None:
    data = rows("a", "a")
    data[0]["name"] = ""  # MISSING_VARIABLE, but its id is taken all the same (as admission does)
    items = await collect(Template("Hi {name}"), data)
    assert [item.error.code for item in items if isinstance(item, Rejected)] == [ErrorCode.MISSING_VARIABLE, DUP]


async def test_derived_ids_keep_no_memory_per_row() -> None:
    template = Template("Hi {name}")
    items = template.messages(rows(*[None] * 5000), from_name="S", message_type="promo", id_prefix="f")
    assert len([item async for item in items]) == 5000
    ids = items._job.ids
    assert (len(ids._hashes), ids.claimed, len(ids._run_starts)) == (0, set(), 0)


async def test_column_ids_cost_a_hash_each_not_the_string() -> None:
    template = Template("Hi {name}")
    data = rows(*[f"order-{i:09d}" for i in range(20_000)])
    items = template.messages(data, from_name="S", message_type="promo")
    assert not [item async for item in items if isinstance(item, Rejected)]
    table = items._job.ids._hashes
    assert len(table) == 20_000
    assert table.nbytes <= 32 * 20_000  # kept at most half full: 16 to 32 bytes an id
    assert len(items._job.ids._run_starts) == 1  # one run of rows with a column id


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "f-1", "f-2", "f-3", "f-4", "f-7", "f-0"])), max_size=8)
)
def test_ids_are_refused_exactly_when_an_earlier_row_used_them(ids: list[str | None]) -> None:
    check = RowIds("f")
    used: set[str] = set()
    for n, tid in enumerate(ids, 1):
        actual = f"f-{n}" if tid is None else tid
        fresh = check.derived(n) if tid is None else check.explicit(tid, n)
        assert fresh == (actual not in used), (ids, n)
        used.add(actual)


def test_the_hash_set_grows_and_answers_like_a_set() -> None:
    table, reference = HashSet64(), set()
    rng = random.Random(7)
    for _ in range(50_000):
        h = rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.getrandbits(64) - 2**63, rng.randrange(3000)])
        assert table.add(h) == ((h or 1) not in reference)
        reference.add(h or 1)
    assert len(table) == len(reference)


async def test_the_stream_keeps_no_id_set_for_a_template_and_still_reports_duplicates() -> None:
    transport = FakeTransport()
    async with CascadeClient(api_key="k", transport=transport, rate_limit=None) as client:
        items = Template("Hi {name}").messages(rows("a", None, "a"), from_name="S", message_type="promo")
        async with client.stream(items) as results:
            got = [r async for r in results]
            assert results._reader.admission.seen is None  # no per-id memory in the stream
    dup = [r for r in got if is_duplicate(r)]
    assert [(r.tracking_id, r.status) for r in dup] == [("a", Status.REJECTED)]
    assert sorted(r.tracking_id for r in got if r.ok) == ["a", "row-2"]


def test_a_sent_batch_is_freed_at_once_not_at_the_next_full_collection() -> None:
    # Flat memory needs it: a batch held by a reference cycle (tenacity's retry objects held one)
    # stays alive, messages and body, until the cycle collector runs.
    async def job() -> None:
        async with make(scripted(), batch_size=10) as client, client.stream([msg(i) for i in range(100)]) as results:
            assert len([r async for r in results]) == 100

    gc.collect()
    gc.disable()
    try:
        run_virtual(job())
        assert [o for o in gc.get_objects() if type(o) is Batch] == []
    finally:
        gc.enable()


row_values = st.fixed_dictionaries(
    {
        "toPhone": st.sampled_from([PHONE, "", None]),
        "name": st.one_of(st.sampled_from(["Ann", "", "50%", "%name=1%", "Олена"]), st.none(), st.integers(-5, 5)),
        "link": st.sampled_from(["https://a.example/1", "https://a.example/2", "ftp://x", ""])
        | st.integers(0, 40).map(lambda i: f"https://b.example/{i}"),
    },
    optional={"id": st.sampled_from(["a", "b", "f-2", "f-5", "", 3])},
)


@settings(max_examples=80, deadline=None)
@given(data=st.lists(row_values, max_size=30), size=st.integers(1, 7), block=st.integers(1, 4))
def test_lists_of_rows_render_exactly_as_rows_one_at_a_time(data: list[dict[str, Any]], size: int, block: int) -> None:
    # render_many over slices of lists, with the pool's block running out mid-list, against the
    # one-row-at-a-time path: the same items, ids and variable ids, in the same order.
    import asyncio

    from cascade_async import LocalIdAllocator, VariablePool
    from cascade_async._template_items import RowLists

    template = Template("Hi {name}: {link:short_url}")

    async def lists() -> Any:
        for start in range(0, len(data), 3):
            yield data[start : start + 3]

    async def both() -> tuple[list[Any], list[Any]]:
        kwargs: dict[str, Any] = {"from_name": "S", "message_type": "promo", "id_prefix": "f"}
        one = template.messages(data, pool=VariablePool(LocalIdAllocator(1), block_size=block), **kwargs)
        singly = [item async for item in one]
        chunked: list[Any] = []
        for rows in (data, RowLists(lists())):
            many = template.messages(rows, pool=VariablePool(LocalIdAllocator(1), block_size=block), **kwargs)
            got = [item async for chunk in many.chunks(size) for item in chunk]
            assert all(len(chunk) <= size for chunk in [got[i : i + size] for i in range(0, len(got), size)])
            chunked.append(got)
        return singly, chunked

    def plain(item: Any) -> Any:  # exceptions compare by identity: compare what they say
        if isinstance(item, Rejected):
            return (item.tracking_id, item.row, item.error.code, item.error.field, str(item.error))
        return item

    singly, chunked = asyncio.run(both())
    for got in chunked:
        assert list(map(plain, got)) == list(map(plain, singly))

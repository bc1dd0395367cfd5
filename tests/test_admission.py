"""Admission: rejected inputs cost no request and no in-flight slot, and never deadlock the engine."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from cascade_async import (
    BadLine,
    ErrorCode,
    Message,
    Result,
    Status,
    ValidationError,
    read_csv,
    read_json_array,
    read_jsonl,
)

from .support import FakeTransport, make, msg, run_virtual


def with_invalid(n: int, every: int) -> list[dict[str, Any]]:
    """``n`` messages, every ``every``-th one with a national phone number (invalid)."""
    return [msg(i, toPhone="0501234567") if i % every == every - 1 else msg(i) for i in range(n)]


@pytest.mark.parametrize("source_kind", ["list", "async"])
def test_five_percent_invalid_inputs_cost_no_requests_and_no_time(source_kind: str) -> None:
    t = FakeTransport(latency=1.0)
    items = with_invalid(2000, 20)
    valid = sum(1 for m in items if m["toPhone"].startswith("+"))

    async def source() -> Any:
        for item in items:
            yield item

    async def main() -> tuple[list[Result], float]:
        async with make(t, batch_size=100, max_in_flight=4, linger=0.05) as c:
            loop = asyncio.get_running_loop()
            start = loop.time()
            results = [r async for r in c.stream(items if source_kind == "list" else source())]
            return results, loop.time() - start

    results, elapsed = run_virtual(main())
    assert len(results) == 2000
    assert sum(r.status is Status.REJECTED for r in results) == 100
    assert len(t.calls) <= math.ceil(valid / 100) + 1
    assert min(len(b) for b in t.batches[:-1]) == 100
    assert elapsed <= 5.0 + 0.2


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_one_in_flight_slot_never_hangs_on_rejections(batch_size: int) -> None:
    t = FakeTransport(latency=0.5)
    source = [msg(1), msg(2), msg(1), msg(3), {"id": "bad"}, msg(4)]

    async def main() -> list[Result]:
        async with make(t, batch_size=batch_size, max_in_flight=1) as c:
            return [r async for r in c.stream(source)]

    results = run_virtual(main())
    assert len(results) == 6
    assert sorted(r.status for r in results).count(Status.REJECTED) == 2


def test_an_all_invalid_input_is_rejected_without_a_single_request() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=10, max_in_flight=1) as c:
            return [r async for r in c.stream([{"id": f"x{i}"} for i in range(5000)])]

    results = run_virtual(main())
    assert len(results) == 5000
    assert all(r.status is Status.REJECTED for r in results)
    assert t.calls == []


def test_rejections_wait_for_a_slow_consumer_instead_of_piling_up() -> None:
    t = FakeTransport()
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        for i in range(100_000):
            pulled += 1
            yield {"id": f"x{i}"}

    async def main() -> int:
        async with make(t, batch_size=10, max_in_flight=2) as c, c.stream(source()) as results:
            async for _ in results:
                break
            await asyncio.sleep(1)
            return pulled

    assert run_virtual(main()) < 1000


def test_a_message_too_large_for_any_batch_is_rejected_at_admission_with_the_others() -> None:
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t, batch_size=10, max_batch_bytes=2048) as c:
            return [r async for r in c.stream([msg(1, text="y" * 5000), msg(2)])]

    by_id = {r.tracking_id: r for r in run_virtual(main())}
    err = by_id["m1"].error
    assert isinstance(err, ValidationError)
    assert err.code is ErrorCode.MESSAGE_TOO_LARGE
    assert by_id["m1"].attempts == 0
    assert t.batches == [["m2"]]


def test_escaped_text_is_counted_by_its_encoded_size_not_its_length() -> None:
    # A control character encodes as \u00XX: 6 bytes for 1 character.
    t = FakeTransport()
    big = [msg(i, text="\x01" * 300) for i in range(30)]

    async def main() -> list[Result]:
        async with make(t, batch_size=30, max_batch_bytes=8_000) as c:
            return [r async for r in c.stream(big)]

    assert all(r.ok for r in run_virtual(main()))
    assert len(t.calls) > 1
    assert all(len(json.dumps(c[3], separators=(",", ":"))) <= 8_000 for c in t.calls)


# --- readers ---------------------------------------------------------------------------------


LINES = [
    json.dumps(msg(1)),
    "{not json",
    json.dumps(msg(2, toPhone="0501234567")),
    "",
    json.dumps(msg(3)),
]


def test_read_jsonl_feeds_stream_directly_and_a_bad_line_is_rejected_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    t = FakeTransport()

    async def main() -> list[Result]:
        async with make(t) as c:
            return [r async for r in c.stream(read_jsonl(path))]

    results = asyncio.run(main())  # the readers use a worker thread: a real loop
    assert sorted(r.tracking_id for r in results if r.ok) == ["m1", "m3"]
    bad = {r.tracking_id: r.error for r in results if not r.ok}
    assert set(bad) == {"<line 2>", "m2"}
    assert isinstance(bad["<line 2>"], ValidationError)
    assert bad["<line 2>"].line == 2
    assert bad["<line 2>"].code == ErrorCode.UNPARSEABLE
    assert "line 2" in str(bad["<line 2>"])
    assert isinstance(bad["m2"], ValidationError)
    assert bad["m2"].line == 3
    assert bad["m2"].field == "toPhone"


def test_read_csv_and_read_json_array_accept_streams_too() -> None:
    csv_bytes = b"id,fromName,toPhone,messageType,text\nc1,Shop,+380501234567,transaction,hi\n"
    array = json.dumps([msg(1), msg(2)]).encode()

    async def main() -> tuple[list[Any], list[Any]]:
        a = [m async for m in read_csv(io.BytesIO(csv_bytes))]
        b = [m async for m in read_json_array(io.BytesIO(array))]
        return a, b

    a, b = asyncio.run(main())
    assert [m.id for m in a] == ["c1"]
    assert [m.id for m in b] == ["m1", "m2"]
    assert not any(isinstance(m, BadLine) for m in a + b)


def test_results_and_messages_from_the_fast_paths_pickle_like_any_other() -> None:
    import pickle

    from cascade_async._models import convert_chunk
    from cascade_async._wire import results_from_acks

    (m,) = convert_chunk([msg(1)]) or []
    assert isinstance(m, __import__("cascade_async").Message)
    (r,) = results_from_acks([m], b'[{"messageId":"u-1","trackinId":"m1","status":"queued"}]', attempts=1)
    assert r.ok
    assert pickle.loads(pickle.dumps(m)).id == "m1"
    assert pickle.loads(pickle.dumps(r)).message_id == "u-1"
    assert repr(m).startswith("Message(")


def test_a_fast_path_message_pickled_before_the_models_split_still_loads() -> None:
    # Pickles name the class by module: the fast path's class lived in _models until it moved
    # to _chunks, and a message pickled then (a task queue, a cache) must load after.
    import pickle

    from cascade_async._models import convert_chunk

    (m,) = convert_chunk([msg(1)]) or []
    new = pickle.dumps(m)
    assert b"cascade_async._chunks" in new
    old = new.replace(b"cascade_async._chunks", b"cascade_async._models")  # same length: same framing
    assert pickle.loads(old) == m


# --- the C fast path accepts nothing the full checks refuse -------------------------------------


def _mostly(valid: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes a hostile one: so that a chunk often passes every other
    check and the one hostile field is what the fast path must catch."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), hostile)


_hostile_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", " ", "\u3000", "\x1c", "\x85", "x\x00y", "\u200b", "a\x7fb", "\t"]),
)
_hostile_phones = st.one_of(
    st.from_regex(r"\+[0-9]{7,16}", fullmatch=True),
    st.sampled_from(
        [
            "+0501234567",
            "+380\u0663" + "01234567",
            "+38050\n1234",
            "380501234567",
            "+3805012345678901",
            "+1+2345678",
            "++380501234",
            "+38050123 4",
        ]
    ),
)
_wire = st.fixed_dictionaries(
    {
        "id": _mostly("m-1", _hostile_text),
        "fromName": _mostly("Shop", _hostile_text),
        "toPhone": _mostly("+380501234567", _hostile_phones),
        "messageType": _mostly("transaction", st.sampled_from(["promo", "viber_survey", "flashcall", "other"])),
        "text": _mostly("hello", st.one_of(_hostile_text, st.none())),
    },
    optional={
        "ttl": st.one_of(st.integers(-5, 2**40), st.booleans(), st.floats(allow_nan=False), st.none()),
        "surveyOptions": st.one_of(st.lists(st.text(max_size=5), max_size=6), st.none()),
        "scheduledSent": st.sampled_from(["2026-11-28T10:00:00Z", "2026-11-28T10:00:00", None]),
        "extra": st.just(1),
    },
)


@hypothesis.settings(max_examples=600, deadline=None)
@hypothesis.given(st.lists(_wire, min_size=1, max_size=3))
def test_the_chunk_fast_path_accepts_exactly_what_the_full_checks_accept(chunk: list[dict[str, Any]]) -> None:
    from cascade_async import Message
    from cascade_async._models import convert_chunk

    fast = convert_chunk(chunk)
    if fast is None:
        return  # declined: every item then goes through the full checks
    for item, message in zip(chunk, fast, strict=True):
        assert Message.from_dict(item).to_dict() == message.to_dict()


_KINDS = ["dict", "Message", "invalid", "no id", "not a message", "too large", "Result"]


def _input(kind: str, i: int) -> Any:
    makers: dict[str, Callable[[], Any]] = {
        "dict": lambda: msg(i),
        "Message": lambda: Message.from_dict(msg(i)),
        "invalid": lambda: msg(i, toPhone="not a phone"),
        "no id": lambda: {"text": "no id"},
        "not a message": lambda: 42,
        "too large": lambda: msg(i, text="x" * 5000),
        "Result": lambda: Result(tracking_id=msg(i)["id"], status=Status.ACCEPTED, message_id=f"earlier-{i}"),
    }
    return makers[kind]()


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(
    items=st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 8)), max_size=30),
    batch_size=st.integers(1, 6),
    source_is_async=st.booleans(),
)
def test_send_many_reports_each_input_id_once_in_input_order_and_every_repeat_as_a_duplicate(
    items: list[tuple[str, int]], batch_size: int, source_is_async: bool
) -> None:
    # Chunks admitted whole and items admitted one by one share one id set: an id repeated
    # within a chunk, across chunks, or after a rejection of the same id is a duplicate.
    inputs = [_input(kind, i) for kind, i in items]
    expected: list[str] = []
    repeats = 0
    for position, item in enumerate(inputs, 1):
        tid = (
            item.id
            if isinstance(item, Message)
            else item.tracking_id
            if isinstance(item, Result)
            else item.get("id")
            if isinstance(item, dict)
            else None
        )
        tid = tid or f"<input #{position}>"
        if tid in expected:
            repeats += 1
        else:
            expected.append(tid)

    async def each() -> Any:
        for item in inputs:
            yield item

    async def main() -> Any:
        async with make(FakeTransport(), batch_size=batch_size, max_batch_bytes=4000) as c:
            return await c.send_many(each() if source_is_async else inputs)

    report = run_virtual(main())
    assert list(report) == expected
    assert len(report.duplicates) == repeats

"""Resumable jobs, in the library: honest states, job identity, one Result per input, flat memory."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cascade_async import (
    AuthenticationError,
    CascadeClient,
    EndpointError,
    Event,
    Journal,
    RetryPolicy,
    RetryScheduled,
    Status,
)
from cascade_async.sandbox import Sandbox

from .support import FakeTransport, error, msg, run_virtual, scripted
from .test_cli import wire


def job(n: int) -> list[dict[str, Any]]:
    return [wire(i, toPhone="+79161234567" if i % 97 == 5 else "+380501234567") for i in range(n)]


async def run_once(sb: Sandbox, journal: Journal, source: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    # one batch at a time, so that the sandbox's scripted faults meet known batches
    async with CascadeClient(
        api_key="k", base_url=sb.url, batch_size=20, max_in_flight=1, rate_limit=None, retry=RetryPolicy(max_attempts=1)
    ) as c:
        results = [r async for r in journal.stream(c, source, **kw)]
    return {
        "results": results,
        "sent": {r.tracking_id for r in results if not r.from_journal and r.attempts},
        "by_id": {r.tracking_id: r for r in results},
    }


def fake_client(transport: FakeTransport, **kw: Any) -> CascadeClient:
    options: dict[str, Any] = {"batch_size": 10, "max_in_flight": 1, "rate_limit": None}
    options.update(kw)
    return CascadeClient(api_key="k", transport=transport, **options)


async def test_a_second_run_sends_only_what_is_left_and_gives_every_input_a_result(tmp_path: Path) -> None:
    source = job(200)
    db = str(tmp_path / "job.db")
    async with Sandbox(reject_prefixes=["+7"], faults=["500", "ok", "lost", "ok", "503"]) as sb:
        with Journal(db) as journal:
            first = await run_once(sb, journal, source)
            counts = journal.counts()
            unknown = set(journal.unknown())
        # batches 0-4 meet 500, ok, lost, ok, 503; +7 numbers (ids 5, 102, 199) are refused
        assert len(first["results"]) == 200
        assert counts == {"accepted": 138, "rejected": 2, "failed": 60}
        assert unknown == {f"c{i}" for i in range(40, 60)}

        with Journal(db) as journal:
            second = await run_once(sb, journal, source)
            assert journal.skipped_done == 140
            assert journal.skipped_unknown == 20
            assert journal.counts()["failed"] == 20  # only the unknown ones remain open
        # the certain failures (the 500 and 503 batches) are resent, the unknown ones are not
        assert second["sent"] == {f"c{i}" for i in [*range(0, 20), *range(80, 100)]}
        assert [r.tracking_id for r in second["results"]].sort() == [m["id"] for m in source].sort()
        assert len(second["results"]) == 200
        lost = second["by_id"]["c45"]
        assert (lost.status, lost.outcome_unknown, lost.from_journal) == (Status.FAILED, True, True)
        earlier = second["by_id"]["c30"]
        assert (earlier.status, earlier.from_journal, earlier.message_id is not None) == (Status.ACCEPTED, True, True)
        refused = second["by_id"]["c102"]
        assert (refused.status, refused.from_journal) == (Status.REJECTED, True)
        assert refused.error is not None
        assert refused.error.code == first["by_id"]["c102"].error.code

        with Journal(db) as journal:
            third = await run_once(sb, journal, source, resend_unknown=True)
            assert journal.unknown() == []
            assert journal.counts() == {"accepted": 197, "rejected": 3}
        assert third["sent"] == unknown
        stats = sb.stats()
    assert stats.unique_ids == 197
    assert stats.duplicated_ids == 20  # the lost batch, resent on request


async def test_a_recorded_rejection_comes_back_as_the_same_error(tmp_path: Path) -> None:
    async with Sandbox(reject_prefixes=["+7"]) as sb:
        with Journal(str(tmp_path / "j.db")) as journal:
            first = (await run_once(sb, journal, [wire(1, toPhone="+79161234567")]))["results"][0]
        with Journal(str(tmp_path / "j.db")) as journal:
            again = (await run_once(sb, journal, [wire(1, toPhone="+79161234567")]))["results"][0]
    assert again.from_journal
    assert not first.from_journal
    assert type(again.error) is type(first.error)
    assert str(again.error) == str(first.error)
    assert again.error is not None
    assert first.error is not None
    assert (again.error.code, getattr(again.error, "status", None)) == (first.error.code, 400)


# --- honest states -----------------------------------------------------------------------------------


def test_a_batch_stopped_in_its_backoff_after_a_503_goes_back_to_not_sent_and_the_next_run_sends_it(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "j.db")

    async def main() -> None:
        seen: list[dict[str, int]] = []
        backing_off = asyncio.Event()

        def hook(event: Event) -> None:
            if isinstance(event, RetryScheduled):
                seen.append(journal.counts())
                backing_off.set()

        with Journal(db) as journal:
            async with fake_client(scripted(error(503)), on_event=hook) as c:
                stream = journal.stream(c, [msg(i) for i in range(10)])
                consumer = asyncio.ensure_future(anext(stream.batches()))
                await backing_off.wait()
                consumer.cancel()
                await stream.aclose()
            assert seen == [{"not_sent": 10}]  # during the backoff
            assert journal.counts() == {"not_sent": 10}
            assert journal.unknown() == []
        transport = scripted()
        with Journal(db) as journal:
            async with fake_client(transport) as c:
                results = [r async for r in journal.stream(c, [msg(i) for i in range(10)])]
            assert journal.counts() == {"accepted": 10}
        assert [r.status for r in results] == [Status.ACCEPTED] * 10
        assert len(transport.calls) == 1

    run_virtual(main())


@pytest.mark.parametrize(
    ("answer", "kind", "status"),
    [
        pytest.param(error(503, "UNAVAILABLE"), "ServerError", 503, id="503-in-its-backoff"),
        pytest.param(error(404), "EndpointError", 404, id="404-a-wrong-url"),
    ],
)
def test_messages_put_back_to_not_sent_keep_the_failure_that_said_so_as_their_last_error(
    tmp_path: Path, answer: Any, kind: str, status: int
) -> None:
    db = str(tmp_path / "j.db")

    async def main() -> None:
        backing_off = asyncio.Event()

        def hook(event: Event) -> None:
            if isinstance(event, RetryScheduled):
                backing_off.set()

        with Journal(db) as journal:
            async with fake_client(scripted(answer), on_event=hook) as c:
                stream = journal.stream(c, [msg(i) for i in range(10)])
                consumer = asyncio.ensure_future(anext(stream.batches()))
                waiter = asyncio.ensure_future(backing_off.wait())
                await asyncio.wait([consumer, waiter], return_when="FIRST_COMPLETED")
                waiter.cancel()
                consumer.cancel()
                await asyncio.gather(consumer, waiter, return_exceptions=True)  # a 404 stops the stream
                await stream.aclose()
            assert journal.counts() == {"not_sent": 10}
            recorded = list(journal.results())
            assert {type(r.error).__name__ for r in recorded} == {kind}
            assert {getattr(r.error, "status", None) for r in recorded} == {status}
            assert all(r.status is Status.FAILED and not r.error.outcome_unknown for r in recorded if r.error)
            last = journal.last_error()
            assert last is not None
            assert f"status {status}" in last[1]
        transport = scripted()
        with Journal(db) as journal:  # the next run sends them, and their error goes with the acceptance
            async with fake_client(transport) as c:
                results = [r async for r in journal.stream(c, [msg(i) for i in range(10)])]
            assert [r.status for r in results] == [Status.ACCEPTED] * 10
            assert journal.last_error() is None

    run_virtual(main())


@pytest.mark.parametrize(
    ("first_answer", "stops_with"),
    [
        pytest.param(error(404), EndpointError, id="404-a-wrong-url"),
        pytest.param(error(405), EndpointError, id="405-a-proxy"),
        pytest.param(error(301), EndpointError, id="301-a-redirect"),
        pytest.param(error(401), AuthenticationError, id="401-wrong-credentials"),
    ],
)
def test_a_configuration_error_settles_nothing_and_the_fixed_rerun_sends_everything(
    tmp_path: Path, first_answer: Any, stops_with: type[Exception]
) -> None:
    db = str(tmp_path / "j.db")
    source = [msg(i) for i in range(20)]

    async def main() -> None:
        with Journal(db) as journal:
            async with fake_client(scripted(first_answer)) as c:
                with pytest.raises(stops_with):
                    [r async for r in journal.stream(c, source)]
            assert journal.counts() == {"not_sent": 10, "new": 10}
        transport = scripted()
        with Journal(db) as journal:
            async with fake_client(transport) as c:
                results = [r async for r in journal.stream(c, source)]
            assert journal.counts() == {"accepted": 20}
        assert sum(r.status is Status.ACCEPTED and not r.from_journal for r in results) == 20
        assert sum(len(call[3]) for call in transport.calls) == 20

    run_virtual(main())


def test_attempts_and_the_last_error_are_recorded(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")

    async def main() -> None:
        with Journal(db) as journal:
            async with fake_client(scripted(error(503), error(503)), retry=RetryPolicy(max_attempts=2)) as c:
                results = [r async for r in journal.stream(c, [msg(i) for i in range(10)])]
            assert {r.status for r in results} == {Status.FAILED}
            assert journal.counts() == {"failed": 10}
            last = journal.last_error()
            assert last is not None
            assert "HTTP 503" in last[1]
            row = journal._db.execute("SELECT attempts, unknown FROM outcomes WHERE tracking_id = 'm3'").fetchone()
            assert row == (2, 0)

    run_virtual(main())


async def test_batches_waiting_for_the_rate_limiter_are_not_marked_sent(tmp_path: Path) -> None:
    from cascade_async import RateLimit

    async with Sandbox() as sb:
        with Journal(str(tmp_path / "j.db")) as journal:
            async with (
                CascadeClient(
                    api_key="k",
                    base_url=sb.url,
                    batch_size=10,
                    max_in_flight=4,
                    rate_limit=RateLimit(requests_per_second=1, burst=1, headroom=0),
                ) as c,
                journal.stream(c, job(100)) as results,
            ):
                async for _ in results:
                    break  # one batch went out; three more wait for the limiter
            assert journal.counts() == {"accepted": 10, "new": 90}  # read, never sent
            assert journal.unknown() == []
        assert sb.stats().requests == 1


async def test_a_journal_that_cannot_write_stops_the_job(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    async with Sandbox() as sb:
        journal = Journal(db)
        journal._db.execute("DROP TABLE outcomes")
        with pytest.raises(sqlite3.Error):
            await run_once(sb, journal, job(50))
        journal.close()


def test_send_many_through_a_journal_reports_every_input_in_input_order(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    source = [msg(i) for i in range(25)]
    source[12] = msg(3)  # a repeat

    async def main() -> None:
        with Journal(db) as journal:
            async with fake_client(scripted(error(503)), retry=RetryPolicy(max_attempts=1)) as c:
                first = await journal.send_many(c, source)
        assert list(first) == [m["id"] for m in source if m is not source[12]]
        assert len(first.duplicates) == 1
        assert first.count(Status.FAILED) == 10  # the first batch met a 503
        with Journal(db) as journal:
            async with fake_client(scripted()) as c:
                second = await journal.send_many(c, source)
        assert list(second) == list(first)
        assert second.count(Status.ACCEPTED) == 24
        assert sum(r.from_journal for r in second.values()) == 14

    run_virtual(main())


async def test_the_journal_command_lists_the_unknown_ids_first_n_and_counts_every_state(tmp_path: Path) -> None:
    from .test_cli import run, text

    db = str(tmp_path / "job.db")
    async with Sandbox(faults=["ok", "lost"]) as sb:
        with Journal(db) as journal:
            await run_once(sb, journal, [wire(i) for i in range(40)], input_name="/data/job.jsonl")
    p = await asyncio.to_thread(run, "journal", db, "--show", "2")
    assert p.returncode == 0, text(p)
    assert "new 0, pending 0, not_sent 0, accepted 20, rejected 0, failed 20" in text(p)
    assert "unknown outcome: 20: c20, c21 ..." in text(p)
    assert "input /data/job.jsonl; 40 messages, fingerprint " in text(p)


def test_send_many_through_a_journal_lists_inputs_rejected_before_the_journal_in_their_places(tmp_path: Path) -> None:
    # Inputs that never reach the journal (invalid, no id, not a message) are reported where
    # they stand in the input, as client.send_many reports them, on the first run and on resume.
    db = str(tmp_path / "j.db")
    source: list[Any] = [msg(0), msg(1, toPhone="bad"), msg(2), {"text": "no id"}, msg(0), msg(3), 42, msg(4)]
    expected = ["m0", "m1", "m2", "<input #4>", "m3", "<input #7>", "m4"]

    async def main() -> None:
        async with fake_client(FakeTransport()) as c:
            plain = await c.send_many(source)
        assert list(plain) == expected
        for run in range(2):
            with Journal(db) as journal:
                async with fake_client(FakeTransport()) as c:
                    report = await journal.send_many(c, source)
            assert list(report) == expected, run
            assert len(report.duplicates) == 1
            assert report["m1"].status is Status.REJECTED

    run_virtual(main())


NO_PHONE = {"id": "m2", "text": "no phone"}


@pytest.mark.parametrize(
    "source",
    [
        pytest.param([msg(1), NO_PHONE, msg(2), msg(3)], id="an invalid input, then its id valid"),
        pytest.param([msg(1), msg(2), NO_PHONE, msg(3)], id="a valid input, then its id invalid"),
    ],
)
def test_a_journaled_send_many_reports_an_id_reused_around_an_invalid_input_as_a_repeat(
    tmp_path: Path, source: list[dict[str, Any]]
) -> None:
    async def main() -> tuple[Any, Any]:
        with Journal(str(tmp_path / "j.db")) as journal:
            async with fake_client(scripted()) as c:
                journaled = await journal.send_many(c, source)
        async with fake_client(scripted()) as c:
            plain = await c.send_many(source)
        return journaled, plain

    journaled, plain = run_virtual(main())
    # As client.send_many: one result per id in input order, the second naming of m2 a duplicate.
    assert list(journaled) == list(plain) == ["m1", "m2", "m3"]
    assert [r.status for r in journaled.values()] == [r.status for r in plain.values()]
    assert [d.tracking_id for d in journaled.duplicates] == [d.tracking_id for d in plain.duplicates] == ["m2"]

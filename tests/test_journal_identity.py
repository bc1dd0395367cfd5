"""A journal belongs to one job: content fingerprints, duplicates found in the journal, one sender,
a versioned schema, the durability choice."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cascade_async import CascadeClient, ErrorCode, Journal, JournalError, JournalLockedError, Status
from cascade_async._journal_input import CHUNK
from cascade_async._journal_schema import SCHEMA_VERSION

from .support import FakeTransport, error, msg, run_virtual, scripted


def client(transport: FakeTransport, **kw: Any) -> CascadeClient:
    return CascadeClient(api_key="k", transport=transport, batch_size=10, max_in_flight=1, rate_limit=None, **kw)


def run_job(db: str, source: Any, transport: FakeTransport | None = None, **kw: Any) -> dict[str, Any]:
    transport = transport or scripted()

    async def main() -> dict[str, Any]:
        with Journal(db) as journal:
            async with client(transport) as c:
                results = [r async for r in journal.stream(c, source, **kw)]
            return {
                "results": results,
                "by_id": {r.tracking_id: r for r in results},
                "sent": [m["id"] for call in transport.calls for m in call[3]],
                "texts": {m["id"]: m.get("text") for call in transport.calls for m in call[3]},
                "counts": journal.counts(),
                "changed": journal.changed,
                "warning": journal.changed_warning(),
            }

    return run_virtual(main())


# --- job identity -------------------------------------------------------------------------------

REFUSE_M1 = error(400, "INVALID_PHONE", "toPhone")  # the first request (holding only m1) is refused


@pytest.mark.parametrize(
    ("first_answers", "second", "kw", "sent_again", "status", "code"),
    [
        pytest.param((), msg(1, text="changed"), {}, [], Status.REJECTED, ErrorCode.CONTENT_CHANGED, id="accepted"),
        pytest.param(
            (), msg(1, text="changed"), {"allow_changes": True}, ["m1"], Status.ACCEPTED, None, id="accepted-allowed"
        ),
        pytest.param(
            (REFUSE_M1,), msg(1, toPhone="+380509999999"), {}, ["m1"], Status.ACCEPTED, None, id="rejected-then-fixed"
        ),
        pytest.param((REFUSE_M1,), msg(1), {}, [], Status.REJECTED, "INVALID_PHONE", id="rejected-unchanged"),
        pytest.param((error(503),), msg(1, text="changed"), {}, ["m1"], Status.ACCEPTED, None, id="never-sent"),
        pytest.param((), msg(1), {}, [], Status.ACCEPTED, None, id="unchanged"),
    ],
)
def test_a_message_whose_content_changed_between_runs_is_never_skipped_silently(
    tmp_path: Path,
    first_answers: tuple[Any, ...],
    second: dict[str, Any],
    kw: dict[str, Any],
    sent_again: list[str],
    status: Status,
    code: str | None,
) -> None:
    db = str(tmp_path / "j.db")
    from cascade_async import RetryPolicy

    async def first() -> None:
        with Journal(db) as journal:
            async with client(scripted(*first_answers), retry=RetryPolicy(max_attempts=1)) as c:
                [r async for r in journal.stream(c, [msg(1)])]

    run_virtual(first())
    got = run_job(db, [second], **kw)
    assert got["sent"] == sent_again
    result = got["by_id"]["m1"]
    assert result.status is status
    assert (result.error.code if result.error else None) == code
    if sent_again:
        assert got["texts"]["m1"] == second["text"]


def test_a_message_refused_for_changed_content_keeps_its_first_content_in_the_journal(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    run_job(db, [msg(1)])
    run_job(db, [msg(1, text="changed")])
    again = run_job(db, [msg(1)])  # the original content: settled, as recorded
    assert again["by_id"]["m1"].from_journal
    assert again["by_id"]["m1"].ok


def test_most_of_a_resumed_job_changed_gives_a_warning(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    run_job(db, [msg(i) for i in range(40)])
    same = run_job(db, [msg(i) for i in range(40)])
    assert same["warning"] is None
    changed = run_job(db, [msg(i, text=f"now {i}") for i in range(40)])
    assert changed["changed"] == 40
    assert changed["warning"] is not None
    assert "40 of the 40" in changed["warning"]
    assert changed["sent"] == []


# --- duplicates, found in the journal -------------------------------------------------------------


@pytest.mark.parametrize(
    "positions",
    [
        pytest.param((3, 7), id="same-chunk"),
        pytest.param((3, CHUNK + 7), id="later-chunk"),
        pytest.param((CHUNK - 1, CHUNK), id="across-a-chunk-edge"),
    ],
)
def test_a_repeated_id_is_rejected_as_a_duplicate_from_the_journal_not_an_in_memory_set(
    tmp_path: Path, positions: tuple[int, int]
) -> None:
    n = CHUNK + 20
    source = [msg(i) for i in range(n)]
    first, again = positions
    source[again] = msg(first, text="a repeat")
    transport = scripted()

    async def main() -> list[Any]:
        with Journal(str(tmp_path / "j.db")) as journal:
            async with client(transport) as c:
                stream = journal.stream(c, iter(source))
                results = [r async for r in stream]
                assert stream._reader.admission.seen is None  # no id set in memory
                return results

    results = run_virtual(main())
    assert len(results) == n
    dup = [r for r in results if r.error is not None and r.error.code == ErrorCode.DUPLICATE_ID]
    assert [r.tracking_id for r in dup] == [f"m{first}"]
    assert sorted(m["id"] for call in transport.calls for m in call[3]) == sorted({m["id"] for m in source})


def test_an_async_source_is_journaled_like_a_sync_one(tmp_path: Path) -> None:
    async def source() -> Any:
        for i in range(25):
            yield msg(i % 20)
            await asyncio.sleep(0)

    got = run_job(str(tmp_path / "j.db"), source())
    assert len(got["results"]) == 25
    assert sum(r.error is not None and r.error.code == ErrorCode.DUPLICATE_ID for r in got["results"]) == 5
    assert got["counts"] == {"accepted": 20}


# --- one sender at a time -------------------------------------------------------------------------


def test_a_second_sender_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    with Journal(db):
        with pytest.raises(JournalLockedError, match=rf"pid {os.getpid()}"):
            Journal(db)
        with Journal(db, sender=False) as reader:  # readers take no lock
            assert reader.counts() == {}
            with pytest.raises(JournalError, match="sender=False"):
                reader.stream(None, [])  # type: ignore[arg-type]
    with Journal(db):  # released at close
        pass
    assert os.path.exists(db + ".lock")


def test_a_reader_of_a_missing_journal_does_not_create_one(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        Journal(str(tmp_path / "none.db"), sender=False)
    assert not (tmp_path / "none.db").exists()


# --- schema version and migration -----------------------------------------------------------------


def first_release_journal(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE outcomes (tracking_id TEXT PRIMARY KEY, status TEXT NOT NULL, message_id TEXT, "
        "error_code TEXT, error_message TEXT, unknown INTEGER NOT NULL DEFAULT 0, "
        "attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL)"
    )
    con.executemany(
        "INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        [
            ("m0", "accepted", "mid-0", None, None, 0, 1),
            ("m1", "rejected", None, "NOT_FOUND", "HTTP 404: wrong url", 0, 1),  # the old wrong-URL bug
            ("m2", "pending", None, None, None, 0, 0),
            ("m3", "failed", None, None, "HTTP 503", 0, 4),
        ],
    )
    con.commit()
    con.close()


def test_a_first_release_journal_is_upgraded_in_place_and_read_rightly(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    first_release_journal(db)
    got = run_job(str(db), [msg(i) for i in range(5)])
    by_id = got["by_id"]
    assert by_id["m0"].from_journal
    assert by_id["m0"].message_id == "mid-0"
    assert by_id["m2"].outcome_unknown
    assert by_id["m2"].from_journal
    assert sorted(got["sent"]) == ["m1", "m3", "m4"]  # rejected by the old bug, a certain failure, new
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        pytest.param(lambda con: con.execute("PRAGMA user_version = 99"), "newer cascade-async", id="newer"),
        pytest.param(lambda con: con.execute("CREATE TABLE users (x)"), "not a cascade-async journal", id="other-db"),
    ],
)
def test_a_journal_this_version_cannot_read_is_refused_clearly(tmp_path: Path, prepare: Any, message: str) -> None:
    db = tmp_path / "j.db"
    con = sqlite3.connect(db)
    prepare(con)
    con.commit()
    con.close()
    with pytest.raises(JournalError, match=message):
        Journal(str(db))
    Journal(str(tmp_path / "fresh.db")).close()  # the failed open left no lock behind
    with pytest.raises(JournalError, match=message):
        Journal(str(db))


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    db.write_bytes(b"this is not a database at all, just some text" * 100)
    with pytest.raises(JournalError, match="not a journal"):
        Journal(str(db))


# --- durability -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "around_a_mark"),
    [
        pytest.param(
            "full", ["PRAGMA synchronous = FULL", "BEGIN", "COMMIT", "PRAGMA synchronous = NORMAL"], id="full"
        ),
        pytest.param("normal", ["BEGIN", "COMMIT"], id="normal"),
    ],
)
def test_with_full_durability_each_pending_mark_is_committed_with_an_fsync(
    tmp_path: Path, choice: Any, around_a_mark: list[str]
) -> None:
    from cascade_async import Message

    with Journal(str(tmp_path / "j.db"), synchronous=choice) as journal:
        assert journal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between marks
        statements: list[str] = []
        journal._db.set_trace_callback(statements.append)
        journal.dispatched([Message.from_dict(msg(1))])
        journal._db.set_trace_callback(None)
    assert [s for s in statements if not s.lstrip().startswith(("UPDATE", "INSERT"))] == around_a_mark


def test_the_default_durability_is_full_and_a_wrong_choice_is_a_value_error(tmp_path: Path) -> None:
    with Journal(str(tmp_path / "j.db")) as journal:
        assert journal.synchronous == "full"
    with pytest.raises(ValueError, match="synchronous"):
        Journal(str(tmp_path / "k.db"), synchronous="off")  # type: ignore[arg-type]
    assert not (tmp_path / "k.db.lock").exists()


def test_an_input_line_broken_in_a_later_run_does_not_overwrite_a_delivered_message(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    run_job(db, [msg(1)])
    broken = run_job(db, [msg(1, toPhone="not a phone")])
    assert broken["by_id"]["m1"].status is Status.REJECTED  # this run's input is refused ...
    assert broken["counts"] == {"accepted": 1}  # ... but the journal still knows it was delivered
    again = run_job(db, [msg(1)])
    assert again["sent"] == []
    assert again["by_id"]["m1"].from_journal


def test_a_slow_async_source_has_each_message_sent_as_it_arrives_not_held_for_a_chunk(tmp_path: Path) -> None:
    # the source gives the next message only once the previous one's result is out
    seen = asyncio.Event()

    async def source() -> Any:
        for i in range(3):
            seen.clear()
            yield msg(i)
            await seen.wait()

    async def main() -> list[str]:
        got = []
        with Journal(str(tmp_path / "j.db")) as journal:
            async with client(scripted(), linger=0.01) as c:
                async for r in journal.stream(c, source()):
                    got.append(r.tracking_id)
                    seen.set()
        return got

    assert run_virtual(asyncio.wait_for(main(), 60)) == ["m0", "m1", "m2"]


def test_an_async_source_that_fails_ends_the_journaled_stream_with_its_error(tmp_path: Path) -> None:
    async def source() -> Any:
        yield msg(1)
        raise OSError("the input broke")

    got: list[str] = []

    async def consume(stream: Any) -> None:
        async for r in stream:
            got.append(r.tracking_id)

    async def main() -> None:
        with Journal(str(tmp_path / "j.db")) as journal:
            async with client(scripted()) as c:
                with pytest.raises(OSError, match="the input broke"):
                    await consume(journal.stream(c, source()))

    run_virtual(main())
    assert got == ["m1"]


@pytest.mark.parametrize(
    ("first", "second", "warned"),
    [
        pytest.param("monday.csv", "tuesday.csv", True, id="another-file"),
        pytest.param("monday.csv", "monday.csv", False, id="the-same-file"),
        pytest.param(None, "tuesday.csv", False, id="first-named"),
        pytest.param("monday.csv", None, False, id="unnamed"),
    ],
)
def test_a_run_on_a_journal_last_used_for_another_input_file_gives_a_warning_naming_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first: str | None, second: str | None, warned: bool
) -> None:
    db = str(tmp_path / "job.db")
    run_job(db, [msg(1)], input_name=first)
    caplog.clear()
    with caplog.at_level("WARNING", logger="cascade_async"):
        second_run = run_job(db, [msg(1), msg(2)], input_name=second)
    warnings = [r.getMessage() for r in caplog.records if "last used for the input" in r.getMessage()]
    assert len(warnings) == int(warned)
    if warned:
        assert "'monday.csv'" in warnings[0]
        assert "'tuesday.csv'" in warnings[0]
    assert second_run["sent"] == ["m2"]  # a warning only: m1 is still settled by the first run

"""Resumable jobs: the SQLite journal, in the library, the CLI, and across a kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async import CascadeClient, Journal, RetryPolicy, Status
from cascade_async.sandbox import Sandbox, sandbox_process

from .test_cli import SECRET, run, text, wire, write_jsonl


def job(n: int) -> list[dict[str, Any]]:
    return [wire(i, toPhone="+79161234567" if i % 97 == 5 else "+380501234567") for i in range(n)]


async def run_once(sb: Sandbox, journal: Journal, source: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    # one batch at a time, so that the sandbox's scripted faults meet known batches
    async with CascadeClient(
        api_key="k", base_url=sb.url, batch_size=20, max_in_flight=1, rate_limit=None, retry=RetryPolicy(max_attempts=1)
    ) as c:
        results = [r async for r in journal.stream(c, source, **kw)]
    return {"results": results, "sent": {r.tracking_id for r in results if not r.from_journal}}


async def test_a_second_run_sends_only_what_is_left(tmp_path: Path) -> None:
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

        with Journal(db) as journal:
            third = await run_once(sb, journal, source, resend_unknown=True)
            assert journal.unknown() == []
            assert journal.counts() == {"accepted": 197, "rejected": 3}
        assert third["sent"] == unknown
        stats = sb.stats()
    assert stats.unique_ids == 197
    assert stats.duplicated_ids == 20  # the lost batch, resent on request


async def test_repeated_ids_do_not_overwrite_the_first_occurrence(tmp_path: Path) -> None:
    async with Sandbox() as sb:
        with Journal(str(tmp_path / "j.db")) as journal:
            await run_once(sb, journal, [wire(1), wire(1, text="again")])
            assert journal.status("c1") == "accepted"


async def test_a_journal_that_cannot_write_stops_the_job(tmp_path: Path) -> None:
    db = str(tmp_path / "j.db")
    async with Sandbox() as sb:
        journal = Journal(db)
        journal._db.execute("DROP TABLE outcomes")
        with pytest.raises(sqlite3.Error):
            await run_once(sb, journal, job(50))
        journal.close()


def test_cli_journal_rerun(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(120)])
    db = tmp_path / "job.db"
    p1 = run("send", str(src), "--sandbox", "--sandbox-latency", "0", "--journal", str(db), "--batch-size", "50")
    assert p1.returncode == 0, text(p1)
    p2 = run("send", str(src), "--sandbox", "--sandbox-latency", "0", "--journal", str(db))
    assert p2.returncode == 0, text(p2)
    assert "skipped 120 already settled" in text(p2)
    assert "0 done: 0 accepted" not in text(p1)


# --- kill -9 in the middle of a 50,000-message job ----------------------------------------------

KILL_N = 50_000


@pytest.fixture
def standalone_sandbox() -> Iterator[str]:
    # answers take 0.3 s, so that a few requests are always on the wire when the kill comes
    with sandbox_process("--latency", "0.3") as url:
        yield url


def stats(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url + "/sandbox/stats", timeout=5) as resp:
        return dict(json.load(resp))


KILL_TABLE: dict[str, Any] = {}


def test_kill_minus_9_then_resume(tmp_path: Path, standalone_sandbox: str) -> None:
    url = standalone_sandbox
    src = write_jsonl(tmp_path / "big.jsonl", [wire(i) for i in range(KILL_N)])
    db = tmp_path / "job.db"
    args = [
        "send",
        str(src),
        "--base-url",
        url,
        "--api-key",
        SECRET,
        "--journal",
        str(db),
        "--rate",  # slow enough (a burst of 15 requests, then 10 a second) to be killed mid-job anywhere
        "10",
        "--batch-size",
        "500",
        "--max-in-flight",
        "8",
        "--no-progress",
    ]
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_API_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cascade_async.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while stats(url)["accepted_messages"] < KILL_N * 0.4:  # well into the job
        assert proc.poll() is None, "the job finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = stats(url)
    assert before["unique_ids"] < KILL_N
    with Journal(str(db)) as journal:
        in_flight_at_kill = len(journal.unknown())
        settled = journal.counts().get("accepted", 0)
    assert in_flight_at_kill <= 8 * 500

    resumed = run(*args, "--resend-unknown", "--rate", "200")
    assert resumed.returncode == 0, text(resumed)
    after = stats(url)
    assert after["unique_ids"] == KILL_N  # every message accepted, none lost
    duplicates = after["accepted_messages"] - KILL_N
    assert duplicates <= in_flight_at_kill
    with Journal(str(db)) as journal:
        assert journal.counts() == {"accepted": KILL_N}
    KILL_TABLE.update(
        {
            "messages": KILL_N,
            "accepted before the kill (server)": before["unique_ids"],
            "settled in the journal at the kill": settled,
            "in flight at the kill (unknown)": in_flight_at_kill,
            "duplicates at the sandbox after resuming": duplicates,
        }
    )
    assert Status.ACCEPTED.value == "accepted"


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

"""Resumable jobs across real processes: kill -9, two senders on one journal, the CLI end to end.

Each kill scenario records what was in flight at the kill and the duplicates the sandbox saw
after resuming (printed at the end of the run: see conftest).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async import Journal
from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox, sandbox_process

from .test_cli import SECRET, run, text, wire, write_jsonl

#: scenario -> what it measured; printed by conftest's terminal summary.
KILL_TABLE: dict[str, dict[str, Any]] = {}


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/sandbox/stats", timeout=5) as resp:
        return dict(json.load(resp))


def send_args(src: Path, db: Path, url: str, *more: str) -> list[str]:
    return ["send", str(src), "--base-url", url, "--api-key", SECRET, "--journal", str(db), "--no-progress", *more]


def start(args: list[str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CASCADE_API_KEY"}
    return subprocess.Popen(
        [sys.executable, "-m", "cascade_async.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the job ended before the moment the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def states(db: Path) -> dict[str, int]:
    """Rows per state, read the way a report beside the sender reads (no lock)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=10)
    try:
        return {s: n for s, n in con.execute("SELECT status, count(*) FROM outcomes GROUP BY status")}
    except sqlite3.OperationalError:
        return {}  # not created yet
    finally:
        con.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


# --- kill -9 in the middle of a 50,000-message job ----------------------------------------------

KILL_N = 50_000


@pytest.fixture
def slow_sandbox() -> Iterator[str]:
    # answers take 0.3 s, so that a few requests are always on the wire when the kill comes
    with sandbox_process("--latency", "0.3") as url:
        yield url


def test_kill_minus_9_then_resume_loses_nothing_and_duplicates_at_most_what_was_in_flight(
    tmp_path: Path, slow_sandbox: str
) -> None:
    url = slow_sandbox
    src = write_jsonl(tmp_path / "big.jsonl", [wire(i) for i in range(KILL_N)])
    db = tmp_path / "job.db"
    # slow enough (a burst of 15 requests, then 10 a second) to be killed mid-job anywhere
    args = send_args(src, db, url, "--rate", "10", "--batch-size", "500", "--max-in-flight", "8")
    proc = start(args)
    wait_for(lambda: stats(url)["accepted_messages"] >= KILL_N * 0.4, proc)  # well into the job
    kill(proc)
    before = stats(url)
    assert before["unique_ids"] < KILL_N
    with Journal(str(db), sender=False) as journal:
        in_flight_at_kill = journal.count_unknown()
        settled = journal.counts().get("accepted", 0)
    assert in_flight_at_kill <= 8 * 500

    # the OS released the dead sender's lock: the resume starts at once
    resumed = run(*args, "--resend-unknown", "--rate", "200", "-o", str(tmp_path / "out.jsonl"))
    assert resumed.returncode == 0, text(resumed)
    after = stats(url)
    assert after["unique_ids"] == KILL_N  # every message accepted, none lost
    duplicates = after["accepted_messages"] - KILL_N
    assert duplicates <= in_flight_at_kill
    with Journal(str(db), sender=False) as journal:
        assert journal.counts() == {"accepted": KILL_N}
    rows = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(rows) == KILL_N  # the output of the resumed run is complete
    KILL_TABLE["kill -9 mid-job (50,000 messages)"] = {
        "accepted before the kill (server)": before["unique_ids"],
        "settled in the journal at the kill": settled,
        "in flight at the kill (unknown)": in_flight_at_kill,
        "duplicates at the sandbox after resuming": duplicates,
    }


def test_kill_minus_9_during_the_backoff_after_a_503_then_resume_sends_those_messages(tmp_path: Path) -> None:
    # the first batch meets a 503, then a 429 that asks for 30 s: the job is surely in its backoff
    with sandbox_process("--fault", "503", "--fault", "429:30") as url:
        src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(200)])
        db = tmp_path / "job.db"
        args = send_args(src, db, url, "--batch-size", "50", "--max-in-flight", "1")
        proc = start(args)
        wait_for(lambda: stats(url)["statuses"].get("429", 0) == 1 and states(db).get("not_sent") == 50, proc)
        kill(proc)
        at_kill = states(db)
        assert at_kill == {"not_sent": 50, "new": 150}
        assert stats(url)["accepted_messages"] == 0
        resumed = run(*args)  # no --resend-unknown: nothing is unknown
        assert resumed.returncode == 0, text(resumed)
        after = stats(url)
    assert after["unique_ids"] == 200
    assert after["accepted_messages"] == 200  # no duplicates: nothing was in flight
    KILL_TABLE["kill -9 in the backoff after a 503 (200 messages)"] = {
        "in flight at the kill (unknown)": at_kill.get("pending", 0),
        "not sent for certain at the kill": at_kill["not_sent"],
        "duplicates at the sandbox after resuming": after["accepted_messages"] - 200,
    }


def test_a_second_sender_on_the_same_journal_exits_2_and_sends_nothing(tmp_path: Path) -> None:
    n = 2000
    with sandbox_process("--latency", "0.2") as url:
        src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(n)])
        db = tmp_path / "job.db"
        out = tmp_path / "out.jsonl"
        args = send_args(src, db, url, "--batch-size", "100", "--max-in-flight", "2", "--rate", "10", "-o", str(out))
        first = start(args)
        wait_for(lambda: stats(url)["requests"] >= 2, first)
        second = run(*args)
        requests_meanwhile = stats(url)["requests"]
        assert second.returncode == 2, text(second)
        assert "another process" in text(second)
        assert "is sending with the journal" in text(second)
        assert f"pid {first.pid}" in text(second)
        first_out, first_err = first.communicate(timeout=120)
        assert first.returncode == 0, first_out.decode() + first_err.decode()
        after = stats(url)
    assert requests_meanwhile < n // 100
    assert after["accepted_messages"] == n  # each id once: the second sender sent nothing
    assert after["unique_ids"] == n
    assert len(out.read_text().splitlines()) == n  # and did not truncate the first one's output


def test_the_journal_command_reads_beside_a_running_sender(tmp_path: Path) -> None:
    with sandbox_process("--latency", "0.2") as url:
        src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(1000)])
        db = tmp_path / "job.db"
        sender = start(send_args(src, db, url, "--batch-size", "100", "--max-in-flight", "1", "--rate", "5"))
        wait_for(lambda: states(db).get("accepted", 0) >= 100, sender)
        report = run("journal", str(db))
        assert sender.poll() is None  # the sender is still at work
        sender.communicate(timeout=120)
    assert report.returncode == 0, text(report)
    assert f"input {src}" in text(report)
    assert "accepted " in text(report)
    assert "unfinished" in text(report)


# --- the CLI, run after run ------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={SECRET}) as sb:
        yield sb


def cli_send(src: Path, db: Path, url: str, *more: str) -> subprocess.CompletedProcess[bytes]:
    return run(*send_args(src, db, url, "--batch-size", "50", *more))


def test_a_wrong_url_settles_nothing_and_after_the_fix_the_resume_sends_everything(
    tmp_path: Path, server: Sandbox
) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(120)])
    db = tmp_path / "job.db"
    wrong = cli_send(src, db, server.url + "/behind-a-proxy")
    assert wrong.returncode == 2, text(wrong)
    assert "the endpoint is wrong" in text(wrong)
    # the batches in flight with the first 404 met it too: none is left unknown
    assert states(db) == {"not_sent": 120}
    fixed = cli_send(src, db, server.url, "-o", str(tmp_path / "out.jsonl"))
    assert fixed.returncode == 0, text(fixed)
    assert states(db) == {"accepted": 120}
    assert server.stats().accepted_messages == 120


def test_the_output_of_every_run_is_complete_and_the_journal_command_exports_the_same_rows(
    tmp_path: Path, server: Sandbox
) -> None:
    source = [wire(i) for i in range(100)]
    source[7] = wire(7, toPhone="+79161234567")  # refused by the provider below
    src = write_jsonl(tmp_path / "m.jsonl", source)
    db = tmp_path / "job.db"
    server.reject_prefixes = ("+7",)
    out1, out2 = tmp_path / "out1.jsonl", tmp_path / "out2.jsonl"
    first = cli_send(src, db, server.url, "-o", str(out1))
    second = cli_send(src, db, server.url, "-o", str(out2), "--synchronous", "normal")
    assert (first.returncode, second.returncode) == (1, 1), text(first) + text(second)
    assert "100 settled by an earlier run" in text(second)
    rows1 = [json.loads(line) for line in out1.read_text().splitlines()]
    rows2 = [json.loads(line) for line in out2.read_text().splitlines()]
    assert len(rows2) == 100
    assert sorted(r["trackingId"] for r in rows2) == sorted(r["trackingId"] for r in rows1)
    assert {r["trackingId"]: r["status"] for r in rows2} == {r["trackingId"]: r["status"] for r in rows1}
    assert server.stats().accepted_messages == 99  # nothing sent twice

    report = run("journal", str(db), "--export", str(tmp_path / "export.csv"))
    assert report.returncode == 0, text(report)
    assert "accepted 99, rejected 1" in text(report)
    assert f"input {src}" in text(report)
    assert "last error: c7: HTTP 400" in text(report)
    with open(tmp_path / "export.csv", newline="") as f:
        exported = {row["trackingId"]: row for row in csv.DictReader(f)}
    assert len(exported) == 100
    assert exported["c7"]["status"] == "rejected"
    assert exported["c7"]["httpStatus"] == "400"
    assert exported["c3"]["messageId"] == next(r["messageId"] for r in rows1 if r["trackingId"] == "c3")


def test_a_resumed_job_whose_content_mostly_changed_warns_and_sends_nothing_that_may_be_delivered(
    tmp_path: Path, server: Sandbox
) -> None:
    db = tmp_path / "job.db"
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(60)])
    assert cli_send(src, db, server.url).returncode == 0
    changed = write_jsonl(tmp_path / "m.jsonl", [wire(i, text=f"sent at {time.time()}") for i in range(60)])
    again = cli_send(changed, db, server.url)
    assert again.returncode == 1
    assert "warning: 60 of the 60 messages" in text(again)
    assert "CONTENT_CHANGED" in text(again) or "other content" in text(again)
    assert server.stats().accepted_messages == 60
    allowed = cli_send(changed, db, server.url, "--allow-changes")
    assert allowed.returncode == 0, text(allowed)
    assert server.stats().accepted_messages == 120


def test_the_journal_command_on_a_missing_file_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    p = run("journal", str(tmp_path / "none.db"))
    assert p.returncode == 2
    assert "no journal" in text(p)
    assert not (tmp_path / "none.db").exists()

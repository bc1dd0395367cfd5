"""The delivery commands end to end: track, report and webhook, through subprocesses against a sandbox."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade_async import Journal, Result, Status
from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox

from .test_cli import run, text, wire, write_jsonl

KEY = "sk-track-SECRET-77"


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={KEY}, delivery_steps=(0.1, 0.2)) as sb:
        yield sb


def sent_job(tmp_path: Path, sb: Sandbox, n: int = 9) -> str:
    phones = ["+380501234567", "+380501234513", "+380501234566"]
    src = write_jsonl(tmp_path / "in.jsonl", [wire(i, toPhone=phones[i % 3]) for i in range(n)])
    journal = str(tmp_path / "job.db")
    p = run("send", str(src), "--base-url", sb.url, "--journal", journal, env={"CASCADE_API_KEY": KEY})
    assert p.returncode == 0, text(p)
    return journal


def test_track_polls_a_job_to_the_end_prints_the_summary_and_exits_0(tmp_path: Path, server: Sandbox) -> None:
    journal = sent_job(tmp_path, server)
    p = run("track", journal, "--base-url", server.url, "--every", "1", env={"CASCADE_API_KEY": KEY})
    assert p.returncode == 0, text(p)
    assert "delivered 3, undeliverable 3, permanenterror 3, pending 0" in text(p)
    assert "total cost:" in text(p)
    assert "UAH" in text(p)
    assert KEY not in text(p)


def test_report_writes_one_row_per_message_with_the_delivery_columns(tmp_path: Path, server: Sandbox) -> None:
    journal = sent_job(tmp_path, server)
    assert run("track", journal, "--base-url", server.url, "--api-key", KEY).returncode == 0
    out = tmp_path / "report.csv"
    p = run("report", journal, "--output", str(out))
    assert p.returncode == 0, text(p)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    assert {"trackingId", "status", "messageId", "deliveryStatus", "cost", "channel"} <= set(rows[0])
    assert {r["deliveryStatus"] for r in rows} == {"delivered", "undeliverable", "permanenterror"}
    assert "pending 0" in text(p)


def test_track_exits_1_when_a_message_is_still_not_final_at_its_timeout(tmp_path: Path) -> None:
    with SandboxThread(delivery_steps=(600.0, 600.0)) as sb:
        journal = sent_job(tmp_path, sb, n=2)
        p = run("track", journal, "--base-url", sb.url, "--api-key", KEY, "--timeout", "1")
    assert p.returncode == 1, text(p)
    assert "pending 2" in text(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_webhook_command_commits_each_report_before_answering_beside_an_open_sender(tmp_path: Path) -> None:
    path = str(tmp_path / "job.db")
    sender = Journal(path)  # a send job holding the journal open
    sender.completed([Result(tracking_id="t1", status=Status.ACCEPTED, message_id="m1")])
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cascade_async.cli", "webhook", "--journal", path, "--port", str(port), "--token", "s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/webhook"
        body = json.dumps({"messageId": "m1", "deliverystatus": "delivered", "cost": 0.05}).encode()
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        assert post(url, body) == 401
        assert post(url + "?token=wrong", body) == 401
        assert post(url + "?token=s", body) == 204
        row = sender._db.execute("SELECT delivery_status, cost FROM deliveries WHERE message_id = 'm1'").fetchone()
        assert tuple(row) == ("delivered", "0.05")
        late = json.dumps({"messageId": "m1", "deliverystatus": "processing"}).encode()
        assert post(url + "?token=s", late) in (200, 204)
        row = sender._db.execute("SELECT delivery_status FROM deliveries WHERE message_id = 'm1'").fetchone()
        assert row[0] == "delivered"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
        sender.close()


def test_report_rows_are_the_journal_export_rows_plus_the_delivery_columns(tmp_path: Path, server: Sandbox) -> None:
    journal = sent_job(tmp_path, server)
    assert run("track", journal, "--base-url", server.url, "--api-key", KEY).returncode == 0
    exported, reported = tmp_path / "export.jsonl", tmp_path / "report.jsonl"
    assert run("journal", journal, "--export", str(exported)).returncode == 0
    assert run("report", journal, "--output", str(reported)).returncode == 0
    plain = [json.loads(line) for line in exported.read_text().splitlines()]
    rich = [json.loads(line) for line in reported.read_text().splitlines()]
    assert len(rich) == len(plain) == 9
    for before, after in zip(plain, rich, strict=True):
        assert {k: after[k] for k in before} == before
        assert set(after) - set(before) <= {
            "deliveryStatus",
            "deliveryFinal",
            "cost",
            "currency",
            "channel",
            "deliveryAt",
        }
        assert after["deliveryFinal"] is True


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["report"], id="report"),
        pytest.param(["track", "--api-key", "k", "--base-url", "http://127.0.0.1:9"], id="track"),
        pytest.param(["webhook", "--port", "0", "--journal"], id="webhook"),
    ],
)
def test_a_delivery_command_given_a_file_that_is_not_a_journal_exits_2_saying_why(
    tmp_path: Path, command: list[str]
) -> None:
    not_a_journal = tmp_path / "notes.db"
    not_a_journal.write_text("just some text, not SQLite\n" * 100)
    args = (
        [*command, str(not_a_journal)] if command[-1] == "--journal" else [command[0], str(not_a_journal), *command[1:]]
    )
    p = run(*args, env={"CASCADE_WEBHOOK_TOKEN": "t"})
    assert p.returncode == 2, text(p)
    assert "error:" in text(p)

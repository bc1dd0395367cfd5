"""The command line, end to end through a subprocess against a real sandbox."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox

SECRET = "sk-cli-SECRET-4242"


def wire(i: int, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": f"c{i}",
        "fromName": "Shop",
        "toPhone": "+380501234567",
        "messageType": "transaction",
        "text": f"hi {i}",
    }
    d.update(over)
    return d


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != "CASCADE_API_KEY"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cascade_async.cli", *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def text(p: subprocess.CompletedProcess[Any]) -> str:
    out = p.stdout.decode() if isinstance(p.stdout, bytes) else p.stdout
    err = p.stderr.decode() if isinstance(p.stderr, bytes) else p.stderr
    return out + err


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={SECRET}) as sb:
        yield sb


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def test_jsonl_to_sandbox_with_output_rows(tmp_path: Path, server: Sandbox) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(1200)])
    out = tmp_path / "out.jsonl"
    p = run(
        "send",
        str(src),
        "--base-url",
        server.url,
        "-o",
        str(out),
        "--batch-size",
        "100",
        env={"CASCADE_API_KEY": SECRET},
    )
    assert p.returncode == 0, text(p)
    assert "1200 accepted" in text(p)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["trackingId"] for r in rows) == sorted(f"c{i}" for i in range(1200))
    assert all(r["status"] == "accepted" and len(r["messageId"]) == 36 for r in rows)
    assert server.stats().max_count == 1
    assert server.stats().unique_ids == 1200
    assert SECRET not in text(p)
    assert SECRET not in out.read_text()


def test_malformed_and_invalid_lines_are_reported_with_line_numbers(tmp_path: Path, server: Sandbox) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(1), "{not json", wire(2, toPhone="0501234567"), "", wire(3)])
    out = tmp_path / "out.csv"
    p = run("send", str(src), "--base-url", server.url, "--api-key", SECRET, "-o", str(out))
    assert p.returncode == 1
    assert "line 2" in text(p)
    assert "line 3" in text(p)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    by_status = {r["trackingId"]: r for r in rows}
    assert by_status["c2"]["status"] == "rejected"
    assert by_status["c2"]["errorField"] == "toPhone"
    assert by_status["c2"]["line"] == "3"
    assert by_status["<line 2>"]["errorCode"] == "UNPARSEABLE"
    assert by_status["c1"]["status"] == by_status["c3"]["status"] == "accepted"
    assert server.stats().unique_ids == 2


def test_csv_input(tmp_path: Path, server: Sandbox) -> None:
    src = tmp_path / "m.csv"
    src.write_text(
        "id,fromName,toPhone,messageType,text,ttl,surveyOptions\n"
        "a1,Shop,+380501234567,transaction,Order ok,3600,\n"
        "a2,Shop,+380501234567,viber_survey,Rate us?,,Good|Bad\n"
        "a3,Shop,+380501234567,flashcall,,,\n"
        "a4,Shop,+380501234567,promo,Sale,soon,\n"
    )
    p = run("send", str(src), "--base-url", server.url, "--api-key", SECRET)
    assert p.returncode == 1
    assert "3 accepted, 1 rejected" in text(p)
    assert "ttl" in text(p)
    assert server.accepted[1]["surveyOptions"] == ["Good", "Bad"]


def test_stdin_json_array(server: Sandbox) -> None:
    body = json.dumps([wire(i) for i in range(30)], indent=2).encode()
    p = run("send", "-", "--base-url", server.url, "--api-key", SECRET, stdin=body)
    assert p.returncode == 0, text(p)
    assert server.stats().unique_ids == 30


def test_dry_run_sends_nothing(tmp_path: Path, server: Sandbox) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(1), wire(2, ttl="60"), wire(3)])
    p = run("send", str(src), "--dry-run", "--base-url", server.url, "--api-key", SECRET)
    assert p.returncode == 1
    assert "line 2" in text(p)
    assert "2 valid, 1 invalid" in text(p)
    assert server.stats().requests == 0


def test_bad_credentials_exit_2_without_echoing_them(tmp_path: Path, server: Sandbox) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(10)])
    p = run("send", str(src), "--base-url", server.url, "--api-key", "wrong-" + SECRET)
    assert p.returncode == 2
    assert "authentication failed" in text(p)
    assert SECRET not in text(p)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(1)])
    assert run("send", str(src), "--batch-size", "5000", "--sandbox").returncode == 2
    assert run("send", str(src), "--base-url", "http://example.com", "--api-key", "k").returncode == 2
    assert run("send", str(tmp_path / "missing.jsonl"), "--sandbox").returncode == 2


def test_embedded_sandbox_says_nothing_leaves(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(50)])
    p = run("send", str(src), "--sandbox", "--sandbox-latency", "0")
    assert p.returncode == 0, text(p)
    assert "nothing leaves this machine" in text(p)
    assert "50 accepted" in text(p)


def test_plain_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(40)])
    p = run("send", str(src), "--sandbox", "--sandbox-latency", "0.8", "--batch-size", "10", "--max-in-flight", "1")
    assert p.returncode == 0, text(p)
    assert "progress/40:" in text(p)


def test_route_option_picks_the_telegram_viber_endpoint(tmp_path: Path, server: Sandbox) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", [wire(i) for i in range(5)])
    p = run("send", str(src), "--base-url", server.url, "--api-key", SECRET, "--route", "tg-viber")
    assert p.returncode == 0, text(p)
    assert server.stats().accepted_messages == 5
    assert server.route_counts == {"/api/CascadeMessage/send_message/tg-viber/async": 1}

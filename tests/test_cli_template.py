"""``cascade-async send --template``, end to end through a subprocess against a real sandbox."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_async.pytest_plugin import SandboxThread
from cascade_async.sandbox import Sandbox

from .test_cli import SECRET, run, text

TEMPLATE = "Hi {name}! Order {order} shipped: {link:short_url}"
ARGS = ("--template", TEMPLATE, "--message-type", "transaction", "--from-name", "Shop")


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with SandboxThread(api_keys={SECRET}) as sb:
        yield sb


def contacts(path: Path, n: int, *, header: str = "toPhone,name,order,link", extra: str = "") -> Path:
    lines = [header] + [f"+38050{i:07d},Name {i},{1000 + i},https://shop.example/t/{i % 7}{extra}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def inbox(sb: Sandbox) -> list[dict[str, Any]]:
    with urllib.request.urlopen(sb.url + "/sandbox/messages?limit=1000") as resp:
        messages: list[dict[str, Any]] = json.load(resp)["messages"]
    return messages


def send(src: Path, server: Sandbox, *args: str) -> Any:
    return run("send", str(src), *ARGS, "--base-url", server.url, "--api-key", SECRET, *args)


def test_a_csv_through_a_template_arrives_rendered_with_short_links(tmp_path: Path, server: Sandbox) -> None:
    src = contacts(tmp_path / "spring.csv", 30)
    out = tmp_path / "out.jsonl"
    p = send(src, server, "-o", str(out))
    assert p.returncode == 0, text(p)
    assert "30 accepted" in text(p)
    shown = {m["trackingId"]: m for m in inbox(server)}
    assert sorted(shown) == sorted(f"spring-{n}" for n in range(1, 31))  # {file stem}-{data row}
    first = shown["spring-1"]
    assert first["text"].startswith("Hi Name 0! Order 1000 shipped: %short_url=")
    assert first["renderedText"].startswith("Hi Name 0! Order 1000 shipped: https://sho.rt/")
    assert len({m["renderedText"].rsplit(" ", 1)[1] for m in shown.values()}) == 7  # one link per value
    assert server.route_counts["/api/items"] == 1
    assert len(out.read_text().splitlines()) == 30


def test_ids_fixed_fields_and_a_phone_column_come_from_the_options(tmp_path: Path, server: Sandbox) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text(
        json.dumps({"id": "vip-1", "mobile": "+380501234567", "name": "Ann", "order": 7, "link": "https://a.b/x"})
        + "\n{broken\n"
        + json.dumps({"mobile": "+380501234568", "order": 8, "link": "https://a.b/y"})
        + "\n"
    )
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    p = send(src, server, "--phone-column", "mobile", "--ttl", "3600", "--scheduled", when.isoformat())
    assert p.returncode == 1
    assert "1 accepted, 2 rejected" in text(p)
    assert "line 2" in text(p)  # the unreadable row keeps its line number
    assert "MISSING_VARIABLE" in text(p) or "no value for template field 'name'" in text(p)
    (accepted,) = server.accepted
    assert (accepted["id"], accepted["ttl"], accepted["toPhone"]) == ("vip-1", 3600, "+380501234567")
    assert dt.datetime.fromisoformat(accepted["scheduledSent"]) == when


def test_a_journaled_template_job_resumes_with_its_ids_and_sends_nothing_twice(tmp_path: Path, server: Sandbox) -> None:
    src = contacts(tmp_path / "c.csv", 20)
    journal = tmp_path / "job.db"
    assert send(src, server, "--journal", str(journal)).returncode == 0
    first = {m["id"]: m["text"] for m in server.accepted}
    contacts(src, 25)  # five more rows
    p = send(src, server, "--journal", str(journal))
    assert p.returncode == 0, text(p)
    assert "20 settled by an earlier run" in text(p)
    assert server.stats().max_count == 1
    later = {m["id"]: m["text"] for m in server.accepted[20:]}
    assert sorted(later) == [f"c-{n}" for n in range(21, 26)]
    link_ids = {t.rsplit("=", 1)[1] for t in first.values()}
    assert {t.rsplit("=", 1)[1] for t in later.values()} <= link_ids  # the same 7 links, the same ids
    assert (tmp_path / "job.db.variables.jsonl").exists()


def test_the_dry_run_counts_sms_segments_per_type_and_says_why_a_text_is_not_gsm(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_text(
        "toPhone,name,order,link\n"
        "+380501234567,Ann,1,https://a.b/1\n"  # GSM-7, one part
        "+380501234568,Олена,2,https://a.b/2\n"  # Cyrillic: UCS-2
        f"+380501234569,{'x' * 120},3,https://a.b/3\n"  # GSM-7, past 160: two parts
        "+380501234570,[Ann],4,https://a.b/4\n"  # the brackets count two each
        "+380501234571,,5,https://a.b/5\n"  # a missing name
    )
    p = run("send", str(src), *ARGS, "--dry-run")
    out = text(p)
    assert p.returncode == 1
    assert "4 valid, 1 invalid" in out
    assert "transaction: 4 message(s)" in out
    assert "5 SMS segment(s) (at most 2 per message)" in out
    assert "1 not GSM-7" in out
    assert "d-2: '\u041e' (U+041E)" in out
    assert "total: 5 SMS segment(s)" in out
    assert "23-character link" in out


def test_the_dry_run_previews_plain_message_files_too(tmp_path: Path) -> None:
    src = tmp_path / "m.jsonl"
    wire = {"fromName": "S", "toPhone": "+380501234567", "messageType": "promo"}
    src.write_text(
        json.dumps(wire | {"id": "a", "text": "€" * 81}) + "\n" + json.dumps(wire | {"id": "b", "text": "🎉"}) + "\n"
    )
    out = text(run("send", str(src), "--dry-run"))
    assert "promo: 2 message(s)" in out
    assert "total: 3 SMS segment(s)" in out  # 162 septets of euro signs take two parts


def test_the_embedded_sandbox_runs_a_template_job(tmp_path: Path) -> None:
    src = contacts(tmp_path / "c.csv", 5)
    p = run("send", str(src), *ARGS, "--sandbox", "--sandbox-latency", "0")
    assert p.returncode == 0, text(p)
    assert "5 accepted" in text(p)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--template", "Hi {name}"), "--message-type and --from-name", id="no message type"),
        pytest.param((*ARGS[:-2], "--from-name", "S", "--template", "Hi {name"), "template", id="a broken template"),
        pytest.param((*ARGS, "--scheduled", "tomorrow"), "ISO 8601", id="a date that is not ISO"),
        pytest.param((*ARGS, "--scheduled", "2030-01-01T10:00:00"), "time zone", id="a naive date"),
    ],
)
def test_incomplete_template_options_are_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    src = contacts(tmp_path / "c.csv", 1)
    p = run("send", str(src), *args, "--dry-run")
    assert p.returncode == 2
    assert message in text(p)


def test_survey_options_are_the_same_for_every_recipient(tmp_path: Path, server: Sandbox) -> None:
    src = tmp_path / "s.csv"
    src.write_text("toPhone,name\n+380501234567,Ann\n+380501234568,Bob\n")
    p = run(
        "send", str(src), "--template", "{name}, how did we do?", "--message-type", "viber_survey",
        "--from-name", "Shop", "--survey-option", "Great", "--survey-option", "Bad",
        "--base-url", server.url, "--api-key", SECRET,
    )  # fmt: skip
    assert p.returncode == 0, text(p)
    assert [m["surveyOptions"] for m in server.accepted] == [["Great", "Bad"], ["Great", "Bad"]]


def test_a_json_array_is_no_template_input(tmp_path: Path) -> None:
    src = tmp_path / "a.json"
    src.write_text('[{"toPhone": "+380501234567", "name": "A"}]')
    p = run("send", str(src), *ARGS, "--dry-run")
    assert p.returncode == 2
    assert "CSV or JSONL" in text(p)


def test_a_journaled_job_whose_variable_ids_were_lost_stops_naming_the_file(tmp_path: Path, server: Sandbox) -> None:
    src = contacts(tmp_path / "c.csv", 5)
    journal = tmp_path / "job.db"
    assert send(src, server, "--journal", str(journal)).returncode == 0
    (tmp_path / "job.db.variables.jsonl").unlink()
    p = send(src, server, "--journal", str(journal))
    assert p.returncode == 2, text(p)
    assert "job.db.variables.jsonl is missing" in text(p)
    assert "CONTENT_CHANGED" not in text(p)
    assert len(server.accepted) == 5  # nothing sent the second time


def test_an_id_column_that_repeats_an_id_is_refused_without_a_journal(tmp_path: Path, server: Sandbox) -> None:
    src = tmp_path / "c.csv"
    src.write_text(
        "id,toPhone,name,order,link\n"
        "a,+380501234567,Ann,1,https://shop.example/1\n"
        ",+380501234568,Bob,2,https://shop.example/2\n"
        "c-2,+380501234569,Cid,3,https://shop.example/3\n"
        "a,+380501234560,Dan,4,https://shop.example/4\n",
        encoding="utf-8",
    )
    p = send(src, server)
    assert p.returncode == 1, text(p)
    assert "2 duplicates" in text(p)
    assert sorted(m["id"] for m in server.accepted) == ["a", "c-2"]

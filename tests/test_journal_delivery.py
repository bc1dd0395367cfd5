"""The journal's delivery columns: forward-only in SQL, pending reports, and the journal after track and webhooks."""

from __future__ import annotations

import asyncio
import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cascade_async import CascadeClient, DeliveryReport, Journal, Message, Result, Status, webhooks
from cascade_async._delivery import report_from_json
from cascade_async._journal_delivery import apply_report, connect, delivery_rows, summary, tracked
from cascade_async.sandbox import Sandbox


def report(mid: str, status: str, **extra: Any) -> DeliveryReport:
    return report_from_json(json.dumps({"messageId": mid, "deliverystatus": status, **extra}).encode())


def journal_with(tmp_path: Path, *pairs: tuple[str, str]) -> tuple[Journal, str]:
    path = str(tmp_path / "job.db")
    journal = Journal(path)
    journal.completed([Result(tracking_id=t, status=Status.ACCEPTED, message_id=m) for t, m in pairs])
    return journal, path


@pytest.mark.parametrize(
    ("sequence", "stored"),
    [
        pytest.param(["scheduled", "processing", "delivered"], "delivered", id="in-order"),
        pytest.param(["delivered", "processing"], "delivered", id="late-processing-after-delivered-ignored"),
        pytest.param(["processing", "scheduled"], "processing", id="late-scheduled-ignored"),
        pytest.param(["undeliverable", "delivered"], "undeliverable", id="a-final-status-never-replaced"),
        pytest.param(["delivered", "delivered", "delivered"], "delivered", id="duplicates"),
    ],
)
def test_reports_are_applied_forward_only_in_sql(tmp_path: Path, sequence: list[str], stored: str) -> None:
    journal, path = journal_with(tmp_path, ("t1", "m1"))
    with journal, closing(connect(path)) as db:
        for status in sequence:
            apply_report(db, report("m1", status, cost=0.05))
        (row,) = list(delivery_rows(db))
    assert row["deliveryStatus"] == stored
    assert row["deliveryFinal"] == 1 if stored != "processing" else row["deliveryFinal"] == 0


def test_a_report_for_an_unknown_message_id_is_kept_and_applied_when_the_send_job_records_it(tmp_path: Path) -> None:
    journal, path = journal_with(tmp_path)
    with journal, closing(connect(path)) as db:
        assert apply_report(db, report("m-early", "delivered", cost=0.02)) is True
        assert apply_report(db, report("m-early", "processing")) is False
        assert summary(db).accepted == 0
        journal.completed([Result(tracking_id="t-early", status=Status.ACCEPTED, message_id="m-early")])
        (row,) = list(delivery_rows(db))
        totals = summary(db)
    assert (row["trackingId"], row["deliveryStatus"], row["cost"]) == ("t-early", "delivered", "0.02")
    assert (totals.delivered, totals.pending) == (1, 0)


def test_summary_counts_statuses_cost_and_channels_and_tracked_lists_the_rest(tmp_path: Path) -> None:
    journal, path = journal_with(tmp_path, ("a", "ma"), ("b", "mb"), ("c", "mc"), ("d", "md"))
    with journal, closing(connect(path)) as db:
        apply_report(db, report("ma", "delivered", cost=0.05, extendedStatuses={"viber": "delivered"}))
        apply_report(db, report("mb", "undeliverable", cost=0))
        apply_report(db, report("mc", "permanenterror"))
        apply_report(db, report("md", "processing"))
        totals = summary(db)
        left = list(tracked(db))
    assert (totals.delivered, totals.undeliverable, totals.permanenterror, totals.pending) == (1, 1, 1, 1)
    assert str(totals.cost) == "0.05"
    assert totals.channels == {"viber": 1}
    assert left == [("d", "md")]


def test_opening_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    import sqlite3

    from cascade_async import JournalError

    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(JournalError, match="not a cascade-async journal"):
        connect(str(path))
    with pytest.raises(JournalError, match="no journal at"):
        connect(str(tmp_path / "missing.db"))


def test_a_new_journal_gets_the_deliveries_table_and_nothing_on_the_send_path(tmp_path: Path) -> None:
    from cascade_async._journal_schema import SCHEMA_VERSION

    with Journal(str(tmp_path / "job.db")) as journal:
        version = journal._db.execute("PRAGMA user_version").fetchone()[0]
        columns = {row[1] for row in journal._db.execute("PRAGMA table_info(deliveries)")}
        indexes = journal._db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outcomes'")
        triggers = journal._db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        outcome_indexes = [name for (name,) in indexes if not name.startswith("sqlite_autoindex")]
    assert version == SCHEMA_VERSION
    assert {"delivery_status", "delivery_final", "cost", "currency", "channel", "delivery_at", "raw"} <= columns
    assert outcome_indexes == []  # nothing added to the send path's writes
    assert triggers == []


def messages(n: int) -> list[Message]:
    phones = ["+380501234567", "+380501234513", "+380501234566"]
    return [
        Message.from_dict(
            {"id": f"j{i}", "fromName": "Shop", "toPhone": phones[i % 3], "messageType": "promo", "text": "Sale"}
        )
        for i in range(n)
    ]


async def test_the_journal_after_track_holds_each_final_status_cost_and_channel(tmp_path: Path) -> None:
    path = str(tmp_path / "job.db")
    async with Sandbox(delivery_steps=(0.1, 0.2)) as sb, CascadeClient(api_key="k", base_url=sb.url) as client:
        with Journal(path) as journal:
            async for _ in journal.stream(client, messages(30)):
                pass
        with closing(connect(path)) as db:
            async for r in client.track(list(tracked(db)), every=1.0):
                apply_report(db, r)
            totals = summary(db)
            rows = list(delivery_rows(db))
    assert (totals.delivered, totals.undeliverable, totals.permanenterror, totals.pending) == (10, 10, 10, 0)
    assert totals.cost > 0
    assert totals.currencies == ["UAH"]
    assert {r["deliveryStatus"] for r in rows if int(r["trackingId"][1:]) % 3 == 1} == {"undeliverable"}
    assert all(r["channel"] for r in rows if r["deliveryStatus"] == "delivered")


async def test_the_journal_after_duplicated_out_of_order_webhooks_beside_a_writing_sender(tmp_path: Path) -> None:
    path = str(tmp_path / "job.db")
    Journal(path).close()  # the job's journal exists before the receiver opens it
    db = connect(path)
    app = web.Application()

    def record(report: DeliveryReport) -> None:
        apply_report(db, report)

    app.router.add_post("/webhook", webhooks.aiohttp_handler(record, token="s"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook?token=s"
    try:
        async with Sandbox(
            delivery_steps=(0.05, 0.1), webhook_url=hook, webhook_faults=["duplicate", "out-of-order"]
        ) as sb:
            async with CascadeClient(api_key="k", base_url=sb.url) as client:
                with Journal(path) as journal:  # the sender keeps writing while reports arrive
                    async for _ in journal.stream(client, messages(30)):
                        pass
                    for _ in range(200):  # every report, the late processing ones included
                        if len(sb.delivery.webhooks_sent) >= 4 * 30:
                            break
                        await asyncio.sleep(0.05)
            sent = len(sb.delivery.webhooks_sent)
        totals = summary(db)
    finally:
        await runner.cleanup()
        db.close()
    assert (totals.delivered, totals.undeliverable, totals.permanenterror, totals.pending) == (10, 10, 10, 0)
    assert sent >= 4 * 30  # processing + final, each twice


def test_tracked_pages_through_the_journal_while_reports_are_applied(tmp_path: Path) -> None:
    journal, path = journal_with(tmp_path, *[(f"t{i}", f"m{i}") for i in range(25)])
    seen = []
    with journal, closing(connect(path)) as db:
        for tid, mid in tracked(db, page=4):
            seen.append(tid)
            apply_report(db, report(mid, "delivered"))
        left = list(tracked(db))
    assert seen == [f"t{i}" for i in range(25)]
    assert left == []

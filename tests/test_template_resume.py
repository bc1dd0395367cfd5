"""A journaled template job killed once a chunk is out resumes with the ids that chunk's messages use."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from cascade_async import LocalIdAllocator, Template, VariablePool, VariableType
from cascade_async._variables import PLACEHOLDER
from cascade_async.sandbox import sandbox_process

from .test_cli import run, text
from .test_journal_processes import kill, send_args, start, stats, wait_for

LINKED = Template("Hi {name}! Track it: {link:short_url}")


def rows(count: int) -> list[dict[str, str]]:
    return [
        {"toPhone": f"+38050{i:07d}", "name": f"N{i}", "link": f"https://shop.example/{i % 7}"} for i in range(count)
    ]


def link_ids(chunk: list[Any]) -> dict[str, int]:
    """Each row's link -> the id its text uses (the texts of wire dicts or Personalised items)."""
    got: dict[str, int] = {}
    for item in chunk:
        message = item if isinstance(item, dict) else item.message
        [m] = PLACEHOLDER.finditer(message["text"])
        got[f"https://shop.example/{int(message['toPhone'][-7:]) % 7}"] = int(m.group(2))
    return got


@pytest.mark.parametrize("resumed_before", [False, True], ids=["a fresh job", "a job already resumed once"])
async def test_a_job_killed_after_a_chunk_went_out_resumes_with_the_ids_that_chunk_used(resumed_before: bool) -> None:
    records: list[dict[str, Any]] = []

    def record(pool: VariablePool) -> None:
        records.append(json.loads(json.dumps(pool.changes())))  # as a journal writes it

    pool = VariablePool(LocalIdAllocator(), on_block=record)
    if resumed_before:  # a replayed pool: the rows take ids through Personalised items
        await pool.variable(VariableType.SHORT_URL, "https://x.example/")
    items = LINKED.messages(rows(20), from_name="S", message_type="promo", pool=pool)
    chunks = items.blocks(5)
    first, _ = await anext(chunks)  # handed to the engine: its messages may be at the provider
    used = link_ids(first)
    # kill -9 here: the generator is never resumed, so no more records
    resumed = VariablePool.replay(records)
    again = LINKED.messages(rows(20), from_name="S", message_type="promo", pool=resumed)
    [(chunk, _)] = [c async for c in again.blocks(100)]
    assert {link: vid for link, vid in link_ids(chunk).items() if link in used} == used


def test_a_template_job_killed_mid_way_resumes_with_its_ids_and_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "contacts.csv"
    with src.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["toPhone", "name", "link"])
        writer.writerows([f"+38050{i:07d}", f"N{i}", f"https://shop.example/{i % 400}"] for i in range(3000))
    db = tmp_path / "job.db"
    template = ["--template", "Hi {name} {link:short_url}", "--message-type", "transaction", "--from-name", "Shop"]
    with sandbox_process("--latency", "0.2") as url:
        # Fewer than a block of links (1000): before the fix none was recorded until the job ended.
        proc = start(send_args(src, db, url, *template, "--batch-size", "50", "--rate", "3"))
        wait_for(lambda: stats(url)["accepted_messages"] >= 200, proc)
        kill(proc)
        again = run(*send_args(src, db, url, *template, "--batch-size", "100"))
    out = text(again)
    assert ", 0 changed" in out, out  # the same rows render the same texts: the same ids
    assert " 0 rejected" in out, out

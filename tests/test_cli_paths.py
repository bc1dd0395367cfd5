"""The command line never writes its results over what it reads or keeps, and refuses what it cannot use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from .test_cli import run, text, wire, write_jsonl


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        (["send", "{input}", "--sandbox", "--output", "{input}"], "input"),
        (["send", "{input}", "--sandbox", "--output", "{dir}/./in.jsonl"], "input"),
        (["send", "{input}", "--sandbox", "--journal", "{journal}", "--output", "{journal}"], "journal"),
        (["send", "{input}", "--sandbox", "--journal", "{journal}", "--output", "{journal}-wal"], "journal"),
        (["journal", "{journal}", "--export", "{journal}"], "journal"),
        (["report", "{journal}", "--output", "{journal}"], "journal"),
    ],
)
def test_an_output_that_would_overwrite_the_input_or_the_journal_is_a_usage_error(
    tmp_path: Path, args: list[str], kept: str
) -> None:
    # Before, the input was emptied and the job "sent 0 messages" with exit 0; a journal was
    # truncated under SQLite, losing the record of what was accepted (a resume sent it all again).
    source = write_jsonl(tmp_path / "in.jsonl", [wire(i) for i in range(3)])
    journal = tmp_path / "job.db"
    assert run("send", str(source), "--sandbox", "--journal", str(journal)).returncode == 0
    paths = {"input": source, "journal": journal}
    before = digest(paths[kept])
    fill = {"input": str(source), "journal": str(journal), "dir": str(tmp_path)}
    p = run(*(arg.format(**fill) for arg in args))
    assert p.returncode == 2, text(p)
    assert "would overwrite" in text(p)
    assert digest(paths[kept]) == before
    assert "accepted 3" in text(run("journal", str(journal)))


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--output", "{dir}/missing/out.csv", "does not exist"),
        ("--rate", "nan", "not a finite number"),
        ("--rate", "inf", "not a finite number"),
        ("--sandbox-latency", "nan", "not a finite number"),
    ],
)
def test_an_unusable_option_is_a_usage_error_not_a_traceback(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [wire(0)])
    p = run("send", str(source), "--sandbox", option, value.format(dir=tmp_path))
    assert p.returncode == 2, text(p)
    assert says in text(p)
    assert "Traceback" not in text(p)

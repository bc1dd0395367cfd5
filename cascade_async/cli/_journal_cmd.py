"""``cascade-async journal JOURNAL``: a job's state, read beside a running sender (no lock)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys

import click

from .._errors import JournalError
from .._journal import Journal
from .._journal_schema import STATES
from .._outputs import ResultWriter, output_format
from ._common import EXIT_OK, EXIT_USAGE, consoles, refuse_overwriting

__all__ = ["journal_command"]


@click.command("journal")
@click.argument("path", metavar="JOURNAL", type=click.Path(dir_okay=False))
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write one row per message, as send --output does: .csv for CSV, anything else JSONL.",
)
@click.option("--show", type=click.IntRange(0), default=20, show_default=True, help="Unknown ids to list.")
def journal_command(path: str, export: str | None, show: int) -> None:
    """Print a resumable job's state: messages per state, unknown ids, the last error, its input."""
    out, err = consoles()
    refuse_overwriting("--export", export, journal=path)
    try:
        journal = Journal(path, sender=False)
    except (JournalError, sqlite3.Error) as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_USAGE)
    with journal:
        for run in journal.runs():
            started = dt.datetime.fromtimestamp(run["started_at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            done = (
                f"{run['messages']} messages, fingerprint {run['fingerprint']}" if run["finished_at"] else "unfinished"
            )
            out.print(f"run {run['run']} at {started}: input {run['input'] or '-'}; {done}", markup=False)
        counts = journal.counts()
        out.print(", ".join(f"{state} {counts.get(state, 0)}" for state in STATES), markup=False)
        total = journal.count_unknown()
        if total:
            ids = journal.unknown(limit=show)
            more = " ..." if total > len(ids) else ""
            out.print(f"unknown outcome: {total}: {', '.join(ids)}{more}", markup=False)
        if (last := journal.last_error()) is not None:
            out.print(f"last error: {last[0]}: {last[1]}", markup=False)
        if export is not None:
            n = 0
            with open(export, "w", encoding="utf-8", newline="") as f:
                writer = ResultWriter(f, output_format(export))
                for result in journal.results():
                    writer.write(result)
                    n += 1
            out.print(f"exported {n} row(s) to {export}", markup=False)
    sys.exit(EXIT_OK)

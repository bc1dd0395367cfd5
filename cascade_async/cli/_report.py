"""``cascade-async report``: the delivery summary of a job's journal, and one row per message."""

from __future__ import annotations

import csv
import sqlite3
import sys
from typing import IO

import click
import msgspec
from rich.console import Console

from .._journal_delivery import DeliverySummary, connect, delivery_rows, summary
from .._outputs import output_format
from ._common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, consoles

__all__ = ["print_summary", "report"]


@click.command()
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write one row per message with its delivery columns: .csv for CSV, anything else JSONL.",
)
def report(journal: str, output: str | None) -> None:
    """Print the delivery summary of a journal (from track or webhook); exit 0 when every message is final."""
    out, err = consoles()
    try:
        db = connect(journal)
    except (ValueError, OSError) as exc:
        err.print(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    with db:
        if output is not None:
            with open(output, "w", encoding="utf-8", newline="") as f:
                write_rows(db, f, output_format(output))
        totals = summary(db)
    print_summary(out, totals)
    sys.exit(EXIT_OK if totals.all_final else EXIT_SOME_FAILED)


def write_rows(db: sqlite3.Connection, stream: IO[str], fmt: str) -> None:
    rows = delivery_rows(db)
    if fmt == "csv":
        first = next(rows, None)
        if first is None:
            return
        writer = csv.DictWriter(stream, fieldnames=list(first))
        writer.writeheader()
        for row in (first, *rows):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return
    encoder = msgspec.json.Encoder()
    for row in rows:
        stream.write(encoder.encode({k: v for k, v in row.items() if v is not None}).decode() + "\n")


def print_summary(out: Console, s: DeliverySummary) -> None:
    currency = f" {'/'.join(s.currencies)}" if s.currencies else ""
    channels = ", ".join(f"{name} {n}" for name, n in s.channels.items()) or "none known"
    out.print(
        f"accepted {s.accepted}: delivered {s.delivered}, undeliverable {s.undeliverable}, "
        f"permanenterror {s.permanenterror}, pending {s.pending}"
    )
    out.print(f"total cost: {s.cost}{currency}; channels: {channels}")

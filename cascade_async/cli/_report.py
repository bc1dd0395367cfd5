"""``cascade-async report``: the delivery summary of a job's journal, and one row per message."""

from __future__ import annotations

import csv
import sqlite3
import sys
from typing import IO, Final

import click
import msgspec
from rich.console import Console

from .._journal_delivery import ROWS_WITH_DELIVERY, DeliverySummary, summary
from .._journal_rows import ROW_COLUMNS, Row, recorded_result
from .._outputs import COLUMNS, output_format, row_for
from ._common import EXIT_OK, EXIT_SOME_FAILED, consoles, open_journal_db, refuse_overwriting

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
    refuse_overwriting("--output", output, journal=journal)
    db = open_journal_db(journal, err)
    with db:
        if output is not None:
            with open(output, "w", encoding="utf-8", newline="") as f:
                write_rows(db, f, output_format(output))
        totals = summary(db)
    print_summary(out, totals)
    sys.exit(EXIT_OK if totals.all_final else EXIT_SOME_FAILED)


#: The delivery columns added to the row format of ``send --output`` and ``journal --export``.
DELIVERY_FIELDS: Final = ("deliveryStatus", "deliveryFinal", "cost", "currency", "channel", "deliveryAt")
_QUERY: Final = (
    "SELECT "
    + ", ".join("o." + column.strip() for column in ROW_COLUMNS.split(","))
    + ", d.delivery_status, COALESCE(d.delivery_final, 0), d.cost, d.currency, d.channel, d.delivery_at "
    + ROWS_WITH_DELIVERY
)


def write_rows(db: sqlite3.Connection, stream: IO[str], fmt: str) -> int:
    """One row per journaled message: the export's row, then its delivery columns."""
    writer: csv.DictWriter[str] | None = None
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=[*COLUMNS[:7], "httpStatus", *COLUMNS[7:], *DELIVERY_FIELDS])
        writer.writeheader()
    encoder = msgspec.json.Encoder()
    n = 0
    for values in db.execute(_QUERY):
        result = recorded_result(Row(*values[: len(Row._fields)]))
        row = row_for(result, getattr(result.error, "line", None))
        delivery = dict(zip(DELIVERY_FIELDS, values[len(Row._fields) :], strict=True))
        delivery["deliveryFinal"] = bool(delivery["deliveryFinal"])
        if writer is not None:
            full = msgspec.structs.asdict(row) | delivery
            writer.writerow({k: "" if v is None else v for k, v in full.items()})
        else:
            compact = msgspec.to_builtins(row)  # without defaults, as send --output writes it
            stream.write(encoder.encode(compact | {k: v for k, v in delivery.items() if v is not None}).decode())
            stream.write("\n")
        n += 1
    return n


def print_summary(out: Console, s: DeliverySummary) -> None:
    currency = f" {'/'.join(s.currencies)}" if s.currencies else ""
    channels = ", ".join(f"{name} {n}" for name, n in s.channels.items()) or "none known"
    out.print(
        f"accepted {s.accepted}: delivered {s.delivered}, undeliverable {s.undeliverable}, "
        f"permanenterror {s.permanenterror}, pending {s.pending}"
    )
    out.print(f"total cost: {s.cost}{currency}; channels: {channels}")

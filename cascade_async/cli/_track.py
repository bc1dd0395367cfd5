"""``cascade-async track``: poll the delivery status of every accepted, non-final message of a journal."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time

import click
from rich.console import Console

from .._client import CascadeClient
from .._errors import AuthenticationError, EndpointError, JournalError
from .._journal_delivery import apply_report, count_tracked, summary, tracked
from ._common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, connection_options, consoles, open_journal_db
from ._report import print_summary

__all__ = ["track"]


@click.command()
@click.argument("journal", type=click.Path(exists=True, dir_okay=False))
@connection_options
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="Seconds per message.")
@click.option("--every", type=click.FloatRange(min=1), default=5.0, show_default=True, help="Seconds between polls.")
def track(
    journal: str,
    api_key: str | None,
    viber_token: str | None,
    telegram_key: str | None,
    base_url: str,
    timeout: float,
    every: float,
) -> None:
    """Poll delivery status for a job's journal until each message is final; exit 0 when all are."""
    out, err = consoles()
    db = open_journal_db(journal, err)
    try:
        client = CascadeClient(api_key=api_key, viber_token=viber_token, telegram_key=telegram_key, base_url=base_url)
    except (JournalError, ValueError, OSError) as exc:
        err.print(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    with db:
        code = asyncio.run(_run(client, db, timeout, every, err))
        totals = summary(db)
    print_summary(out, totals)
    sys.exit(code if code != EXIT_OK else EXIT_OK if totals.all_final else EXIT_SOME_FAILED)


async def _run(
    client: CascadeClient,
    db: sqlite3.Connection,
    timeout: float,  # noqa: ASYNC109 (per message)
    every: float,
    err: Console,
) -> int:
    total = count_tracked(db)
    err.print(f"tracking {total} message(s) not final yet")
    done = final = 0
    shown = time.monotonic()
    async with client:
        try:
            async for report in client.track(tracked(db), timeout=timeout, every=every):
                apply_report(db, report)  # committed before the next one
                done += 1
                final += report.final
                if time.monotonic() - shown >= 2.0 or done == total:
                    shown = time.monotonic()
                    err.print(f"{done}/{total} settled ({final} final)")
        except (AuthenticationError, EndpointError, ValueError) as exc:
            err.print(f"error: {exc}")
            return EXIT_USAGE
    return EXIT_OK

"""``cascade-async webhook``: a standalone receiver that writes delivery reports into a journal."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click
from aiohttp import web
from rich.console import Console

from .._delivery import DeliveryReport
from .._journal_delivery import apply_report
from ..webhooks import aiohttp_handler
from ._common import consoles, open_journal_db

__all__ = ["webhook"]


@click.command()
@click.option("--journal", required=True, type=click.Path(exists=True, dir_okay=False), help="The job's journal.")
@click.option("--port", type=int, required=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (loopback unless told).")
@click.option(
    "--token",
    envvar="CASCADE_WEBHOOK_TOKEN",
    show_envvar=True,
    required=True,
    help="Shared secret the provider must send as ?token=. Never printed.",
)
def webhook(journal: str, port: int, host: str, token: str) -> None:
    """Receive delivery reports at POST /webhook?token=SECRET and commit each to the journal before answering.

    It runs beside a send job writing the same journal (it never takes the job's lock).
    """
    out, err = consoles()
    db = open_journal_db(journal, err)

    def on_report(report: DeliveryReport) -> None:
        apply_report(db, report)  # committed: only then does the handler answer 2xx

    app = web.Application()
    app.router.add_post("/webhook", aiohttp_handler(on_report, token=token))
    with db:
        asyncio.run(_serve(app, host, port, out))


async def _serve(app: web.Application, host: str, port: int, out: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    out.print(f"cascade-async webhook listening on http://{host}:{port}/webhook?token=...")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()

"""The click group; each command lives in its own module."""

from __future__ import annotations

import click

from ._journal_cmd import journal_command
from ._report import report
from ._sandbox import sandbox_command
from ._send import send
from ._track import track
from ._webhook import webhook

__all__ = ["cli"]


@click.group()
@click.version_option(package_name="cascade-async")
def cli() -> None:
    """Send messages through SMSBAT's Cascade Messages API, or run a local sandbox of it."""


cli.add_command(send)
cli.add_command(sandbox_command)
cli.add_command(track)
cli.add_command(webhook)
cli.add_command(report)
cli.add_command(journal_command)

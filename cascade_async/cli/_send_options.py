"""The options of ``cascade-async send``: route, format, pacing, output, sandbox, journal, progress."""

from __future__ import annotations

import math
from typing import Any

import click

from .._inputs import FORMATS
from ._common import ROUTES, F

__all__ = ["send_options"]


def send_options(command: F) -> F:
    """Every option of ``send`` but the connection's and the template's, in the order ``--help`` shows."""
    for option in reversed(
        [
            click.option("--route", type=click.Choice(sorted(ROUTES)), default="cascade", show_default=True),
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["auto", *FORMATS]),
                default="auto",
                show_default=True,
                help="Input format; auto goes by extension, then by the first character.",
            ),
            click.option("--batch-size", type=click.IntRange(1, 1000), default=500, show_default=True),
            click.option("--max-in-flight", type=click.IntRange(1, 256), default=8, show_default=True),
            click.option(
                "--rate",
                type=click.FloatRange(min=0, min_open=True),
                callback=_finite,
                default=100.0,
                show_default=True,
                help="Requests per second (burst 1.5x).",
            ),
            click.option(
                "--redis",
                "redis_url",
                envvar="CASCADE_REDIS_URL",
                show_envvar=True,
                default=None,
                metavar="URL",
                help="Share the rate limit with every process on this account through Redis "
                "(needs cascade-async[redis]). The password is never printed.",
            ),
            click.option(
                "--priority",
                type=click.Choice(["bulk", "interactive"]),
                default="bulk",
                show_default=True,
                help="bulk leaves the rate limit's interactive reserve to interactive senders.",
            ),
            click.option(
                "--output",
                "-o",
                type=click.Path(dir_okay=False, writable=True),
                default=None,
                help="Write one result row per input: .csv for CSV, anything else JSONL.",
            ),
            click.option("--dry-run", is_flag=True, help="Validate only; report bad lines; send nothing."),
            click.option(
                "--sandbox",
                "use_sandbox",
                is_flag=True,
                help="Start an embedded local sandbox and send to it; nothing leaves this machine.",
            ),
            click.option(
                "--sandbox-latency",
                type=click.FloatRange(min=0),
                callback=_finite,
                default=0.1,
                show_default=True,
                help="Latency of the embedded sandbox per request, seconds.",
            ),
            click.option(
                "--journal",
                "journal_path",
                type=click.Path(dir_okay=False),
                default=None,
                help="SQLite journal of every outcome: running the same job again sends only what is left.",
            ),
            click.option(
                "--resend-unknown",
                is_flag=True,
                help="With --journal: also resend messages whose outcome is unknown (they may arrive twice).",
            ),
            click.option(
                "--allow-changes",
                is_flag=True,
                help="With --journal: send the new content of a message an earlier run may have delivered "
                "with other content.",
            ),
            click.option(
                "--synchronous",
                type=click.Choice(["full", "normal"]),
                default="full",
                show_default=True,
                help="With --journal: full survives power loss; normal survives a killed process, and is faster.",
            ),
            click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal)."),
        ]
    ):
        command = option(command)
    return command


def _finite(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # FloatRange lets nan and inf through (nan compares false with every bound).
    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value

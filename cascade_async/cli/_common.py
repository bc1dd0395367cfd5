"""What several commands share: exit codes, routes, credentials, consoles."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import click
from rich.console import Console

from .._client import DEFAULT_BASE_URL
from .._errors import JournalError
from .._journal_delivery import connect
from .._models import Route

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_USAGE: Final = 2
ROUTES: Final = {"cascade": Route.CASCADE, "tg-viber": Route.TELEGRAM_VIBER}

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(command: F) -> F:
    """``--api-key``, ``--viber-token``, ``--telegram-key`` and ``--base-url``."""
    for option in reversed(
        [
            click.option(
                "--api-key",
                envvar="CASCADE_API_KEY",
                show_envvar=True,
                default=None,
                help="SMSBAT API key (default: $CASCADE_API_KEY). Never printed.",
            ),
            click.option("--viber-token", default=None, help="Viber bot credentials (X-Viber-Auth-Token)."),
            click.option("--telegram-key", default=None, help="Telegram bot key (X-Tg-Bot-Key)."),
            click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True),
        ]
    ):
        command = option(command)
    return command


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles that print text as it is (no markup guessing)."""
    return Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)


def open_journal_db(path: str, err: Console) -> sqlite3.Connection:
    """The journal's database for the delivery commands, or exit with a usage error naming why."""
    try:
        return connect(path)
    except (JournalError, ValueError, OSError) as exc:
        err.print(f"error: {exc}")
        sys.exit(EXIT_USAGE)

"""What several commands share: exit codes, routes, credentials, consoles."""

from __future__ import annotations

import os
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


def refuse_overwriting(
    option: str, output: str | None, *, inputs: tuple[str, ...] = (), journal: str | None = None
) -> None:
    """A usage error (exit 2) before anything is opened when ``output`` would truncate the input
    or the journal (or its WAL, shared memory or lock file), or lies in a folder that does not exist."""
    if output is None:
        return
    kept = [path for path in inputs if path != "-"]
    if journal is not None:
        kept += [journal + suffix for suffix in ("", "-wal", "-shm", ".lock")]
    for path in kept:
        if _same_file(output, path):
            raise click.UsageError(f"{option} {output} would overwrite {path}: write the results elsewhere")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise click.UsageError(f"{option} {output}: the folder {folder} does not exist")


def _same_file(one: str, two: str) -> bool:
    try:
        return os.path.samefile(one, two)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return os.path.realpath(one) == os.path.realpath(two)

"""The ``cascade-async`` command. Needs the ``cli`` extra: ``pip install 'cascade-async[cli]'``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    try:
        from ._app import cli
    except ImportError as exc:  # click or rich missing
        print(
            f"cascade-async: the command line needs the 'cli' extra ({exc.name} is missing):\n"
            "    pip install 'cascade-async[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    cli.main(args=argv, prog_name="cascade-async")

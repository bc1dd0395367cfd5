"""What a journal knows, for reports: states, unknown outcomes, runs, recorded Results.

Read-only queries over the ``outcomes`` and ``runs`` tables; ``Journal`` has them all
(``sender=False`` journals, for reports beside a running job, included).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from ._journal_rows import ROW_COLUMNS, UNKNOWN_WHERE, Row, recorded_result
from ._journal_schema import SCHEMA_VERSION
from ._models import Result

__all__ = ["JournalQueries"]


class JournalQueries:
    """``Journal``'s reads of what the job knows."""

    _db: sqlite3.Connection

    def status(self, tracking_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM outcomes WHERE tracking_id = ?", (tracking_id,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """Messages per state: new, pending, not_sent, accepted, rejected, failed."""
        rows = self._db.execute("SELECT status, count(*) FROM outcomes GROUP BY status").fetchall()
        return {str(status): int(n) for status, n in rows}

    def unknown(self, limit: int | None = None) -> list[str]:
        """Tracking ids whose outcome is unknown: in flight at a crash, or their answer was lost."""
        query = f"SELECT tracking_id FROM outcomes WHERE {UNKNOWN_WHERE} ORDER BY tracking_id"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [str(r[0]) for r in self._db.execute(query)]

    def count_unknown(self) -> int:
        return int(self._db.execute(f"SELECT count(*) FROM outcomes WHERE {UNKNOWN_WHERE}").fetchone()[0])

    def last_error(self) -> tuple[str, str] | None:
        """The most recent recorded error: (tracking id, text)."""
        row = self._db.execute(
            f"SELECT {ROW_COLUMNS} FROM outcomes WHERE error_message IS NOT NULL ORDER BY updated_at DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        result = recorded_result(Row(*row))
        return result.tracking_id, str(result.error)

    def runs(self) -> list[dict[str, Any]]:
        """Each run of the job: when, which input, its fingerprint, how many messages it read."""
        cur = self._db.execute("SELECT * FROM runs ORDER BY run")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def results(self) -> Iterator[Result]:
        """One Result per journaled message as the journal knows it (``from_journal``), in the
        order messages were first read; messages not settled come out FAILED."""
        for row in self._db.execute(f"SELECT {ROW_COLUMNS} FROM outcomes ORDER BY rowid"):
            yield recorded_result(Row(*row))

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

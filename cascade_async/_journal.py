"""A SQLite journal that makes a bulk job resumable after a crash.

>>> with Journal("job.db") as journal:
...     async for result in journal.stream(client, read_jsonl("big.jsonl")):
...         ...
...     print(journal.unknown())    # in flight at a crash, or answer lost: resend knowingly

Every batch is recorded as ``pending`` (committed) just before its first request leaves (after
the rate limiter: a batch still waiting was never sent), and every result as it arrives (one
commit per batch; WAL mode, so a commit is cheap and survives a killed process).
Running the same job again skips messages already ``accepted`` or ``rejected``, sends those
that failed for certain, and leaves out the ones whose outcome is unknown (a ``pending`` row
left by a crash, or a failure with ``outcome_unknown``) unless ``resend_unknown=True``: the
provider may have them already, and it does not promise to de-duplicate.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

from ._admission import is_duplicate
from ._models import Message, Result, Route
from ._ratelimit import Priority
from ._stream import MessageSource, ResultStream

if TYPE_CHECKING:
    from ._client import CascadeClient

__all__ = ["Journal"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outcomes (
    tracking_id   TEXT PRIMARY KEY,
    status        TEXT NOT NULL,      -- pending, accepted, rejected, failed
    message_id    TEXT,
    error_code    TEXT,
    error_message TEXT,
    unknown       INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL
)
"""
_UPSERT: Final = """
INSERT INTO outcomes (tracking_id, status, message_id, error_code, error_message, unknown, attempts, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tracking_id) DO UPDATE SET status = excluded.status, message_id = excluded.message_id,
    error_code = excluded.error_code, error_message = excluded.error_message, unknown = excluded.unknown,
    attempts = outcomes.attempts + excluded.attempts, updated_at = excluded.updated_at
"""
_PENDING: Final = """
INSERT INTO outcomes (tracking_id, status, updated_at) VALUES (?, 'pending', ?)
ON CONFLICT (tracking_id) DO UPDATE SET status = 'pending', unknown = 0, updated_at = excluded.updated_at
"""
_FINAL: Final = frozenset({"accepted", "rejected"})


class Journal:
    """Outcomes of a bulk job, kept in SQLite so that running it again sends only what is left."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
        self._db.execute(_SCHEMA)
        #: Messages left out by the last ``stream()``: already done, or of unknown outcome.
        self.skipped_done = 0
        self.skipped_unknown = 0

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # --- what the job knows -----------------------------------------------------------

    def status(self, tracking_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM outcomes WHERE tracking_id = ?", (tracking_id,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, count(*) FROM outcomes GROUP BY status").fetchall()
        return {str(status): int(n) for status, n in rows}

    def unknown(self) -> list[str]:
        """Tracking ids whose outcome is unknown: in flight at a crash, or their answer was lost."""
        rows = self._db.execute(
            "SELECT tracking_id FROM outcomes WHERE status = 'pending' OR (status = 'failed' AND unknown = 1) "
            "ORDER BY tracking_id"
        ).fetchall()
        return [str(r[0]) for r in rows]

    # --- sending ----------------------------------------------------------------------

    def stream(
        self,
        client: CascadeClient,
        messages: MessageSource,
        *,
        route: Route | None = None,
        resend_unknown: bool = False,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> ResultStream:
        """``client.stream()`` over the messages this journal does not already settle.

        Use it as ``async for`` or ``async with``, like ``client.stream()``.
        """
        self.skipped_done = self.skipped_unknown = 0
        source = self._remaining(messages, resend_unknown)
        return client.stream(source, route=route, dedupe=True, recorder=self, priority=priority)

    async def _remaining(
        self, messages: MessageSource, resend_unknown: bool
    ) -> AsyncIterator[Message | Mapping[str, Any]]:
        lookup = self._db.execute
        query = "SELECT status, unknown FROM outcomes WHERE tracking_id = ?"
        async for item in _aiter(messages):
            tid = item.id if isinstance(item, Message) else item.get("id") if isinstance(item, Mapping) else None
            if isinstance(tid, str):
                row = lookup(query, (tid,)).fetchone()
                if row is not None:
                    status, unknown = row
                    if status in _FINAL:
                        self.skipped_done += 1
                        continue
                    if (status == "pending" or unknown) and not resend_unknown:
                        self.skipped_unknown += 1
                        continue
            yield item

    # --- Recorder: called by the engine ---------------------------------------------------

    def dispatched(self, batch: Sequence[Message]) -> None:
        now = time.time()
        with self._transaction():
            self._db.executemany(_PENDING, [(m.id, now) for m in batch])

    def not_sent(self, batch: Sequence[Message]) -> None:
        # Certainly not delivered (refused, 429, a certain 5xx): resendable after a kill.
        with self._transaction():
            self._db.executemany(
                "DELETE FROM outcomes WHERE tracking_id = ? AND status = 'pending'", [(m.id,) for m in batch]
            )

    def completed(self, results: Sequence[Result]) -> None:
        now = time.time()
        rows = []
        for r in results:
            if is_duplicate(r):
                continue  # the row belongs to the id's first occurrence
            err = r.error
            rows.append(
                (
                    r.tracking_id,
                    r.status.value,
                    r.message_id,
                    None if err is None else err.code,
                    None if err is None else str(err),
                    int(r.outcome_unknown),
                    r.attempts,
                    now,
                )
            )
        if rows:
            with self._transaction():
                self._db.executemany(_UPSERT, rows)

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN")
        return self._db


async def _aiter(messages: MessageSource) -> AsyncIterator[Any]:
    if isinstance(messages, Iterable):
        for item in messages:
            yield item
    else:
        async for item in messages:
            yield item

"""A SQLite journal that makes a bulk job resumable after a crash, and safe to run again.

>>> with Journal("job.db") as journal:                   # one sender at a time: JOURNAL.lock
...     async for result in journal.stream(client, read_jsonl("big.jsonl")):
...         ...                                           # one Result per input, every run
...     print(journal.unknown())    # in flight at a crash, or answer lost: resend knowingly

A journal belongs to one job: it keeps, per tracking id, a fingerprint of the message's wire
content, its state, its attempts and its last error. A row is ``pending`` (committed) just
before each request holding it leaves (after the rate limiter), goes back to ``not_sent``
after an answer that says it certainly was not taken (refused, 429, a certain 5xx, a wrong
endpoint) unless an earlier attempt's outcome was unknown, and is settled only by the
provider's answer (``accepted``, ``rejected``) or ends ``failed`` (``unknown`` or not).
Writes are one transaction per chunk of input and per batch (WAL mode).

Running the job again sends only what is left (see ``_journal_source``): every input still
gets a Result, the settled ones from the journal (``from_journal=True``). Durability:
``synchronous="full"`` (the default) fsyncs the WAL before each request leaves, so what the
journal says was sent survives power loss as well as kill -9 (results recorded since the last
fsync may be lost to a power cut: those messages then read as of unknown outcome, never as
unsent); ``"normal"`` survives kill -9 (the OS keeps what was written) but a power loss may
undo the last commits, after which messages could be sent twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from ._errors import ErrorCode, JournalError
from ._journal_lock import SenderLock
from ._journal_rows import (
    ACCEPTED_UPDATE,
    COMPLETED_UPSERT,
    DISPATCHED,
    DISPATCHED_NEW,
    NOT_SENT_UPDATE,
    ROW_COLUMNS,
    UNKNOWN_WHERE,
    Row,
    recorded_result,
    row_values,
)
from ._journal_schema import SCHEMA_VERSION, open_journal
from ._journal_source import ResumeFilter
from ._models import Message, Result, Route
from ._ratelimit import Priority
from ._report import BulkReport
from ._stream import MessageSource, ResultStream

if TYPE_CHECKING:
    from ._client import CascadeClient

__all__ = ["Journal"]

logger = logging.getLogger("cascade_async")

Synchronous = Literal["full", "normal"]
_BUSY_TIMEOUT_MS: Final = 10_000
#: Results that say nothing new about the id's row: decided from the journal or by the input alone.
_NOT_RECORDED: Final = frozenset({ErrorCode.DUPLICATE_ID, ErrorCode.CONTENT_CHANGED})


class Journal:
    """Outcomes of a bulk job, kept in SQLite so that running it again sends only what is left.

    The sender holds ``JOURNAL.lock`` (``flock``) from construction to ``close()``: a second
    sender gets ``JournalLockedError``. ``sender=False`` takes no lock and cannot send: for
    reports (and delivery updates) beside a running job, under SQLite's ``busy_timeout``.
    A journal of an older schema is upgraded in place; one of a newer schema is refused with
    ``JournalError``. One ``stream()`` at a time.
    """

    def __init__(self, path: str, *, synchronous: Synchronous = "full", sender: bool = True) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if not sender and not os.path.exists(path):
            raise JournalError(f"no journal at {path}")
        self.path = path
        self.sender = sender
        self.synchronous = synchronous
        self._lock = SenderLock(path) if sender else None
        try:
            # NORMAL between marks; with "full", each ``dispatched`` commit is made with FULL (below).
            self._db = open_journal(path, "NORMAL", _BUSY_TIMEOUT_MS)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._filter: ResumeFilter | None = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database, then release the sender lock."""
        try:
            self._db.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    # --- what the job knows -----------------------------------------------------------

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

    # --- sending ----------------------------------------------------------------------

    def stream(
        self,
        client: CascadeClient,
        messages: MessageSource,
        *,
        route: Route | None = None,
        resend_unknown: bool = False,
        allow_changes: bool = False,
        input_name: str | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> ResultStream:
        """``client.stream()`` over the messages this journal does not already settle: one
        Result per input, those settled before (or left unknown) from the journal.

        ``resend_unknown`` sends again the messages whose outcome is unknown (they may arrive
        twice); ``allow_changes`` sends the new content of a message that may have been
        delivered with other content (else REJECTED ``CONTENT_CHANGED``). ``input_name`` is
        recorded with the run (the CLI records the input file). Duplicate ids are found in the
        journal, so memory stays flat however long the input.
        """
        if self._lock is None:
            raise JournalError(f"the journal {self.path} was opened with sender=False: it cannot send")
        options = json.dumps({"resend_unknown": resend_unknown, "allow_changes": allow_changes})
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO runs (started_at, input, options) VALUES (?, ?, ?)", (time.time(), input_name, options)
            )
        run = int(cast(int, cur.lastrowid))
        self._filter = f = ResumeFilter(self._db, run, resend_unknown=resend_unknown, allow_changes=allow_changes)
        source = f.aiter(messages) if isinstance(messages, AsyncIterable) else f.sync(messages)
        # The filter also yields Results, which admission passes through (not in MessageSource's type).
        return client.stream(
            cast(MessageSource, source), route=route, dedupe=False, recorder=self, priority=priority
        )

    async def send_many(
        self,
        client: CascadeClient,
        messages: MessageSource,
        *,
        route: Route | None = None,
        resend_unknown: bool = False,
        allow_changes: bool = False,
        input_name: str | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> BulkReport:
        """``client.send_many()`` through this journal: a ``BulkReport`` of every input in input
        order, those settled by earlier runs included (``from_journal``). Holds every Result in
        memory, like ``client.send_many``; use ``stream()`` for jobs of millions."""
        started = time.monotonic()
        order: list[str] = []
        stream = self.stream(
            client,
            messages,
            route=route,
            resend_unknown=resend_unknown,
            allow_changes=allow_changes,
            input_name=input_name,
            priority=priority,
        )
        assert self._filter is not None
        self._filter.order = order
        by_id: dict[str, Result] = {}
        duplicates: list[Result] = []

        def report() -> BulkReport:
            ordered = {tid: by_id[tid] for tid in order if tid in by_id}
            ordered.update((tid, r) for tid, r in by_id.items() if tid not in ordered)  # rejected before parsing
            return BulkReport(ordered, duplicates, time.monotonic() - started)

        try:
            async with stream:
                async for batch in stream.batches():
                    for result in batch:
                        if result.error is not None and result.error.code == ErrorCode.DUPLICATE_ID:
                            duplicates.append(result)
                        else:
                            by_id[result.tracking_id] = result
        except Exception as exc:
            with contextlib.suppress(AttributeError):
                exc.partial_report = report()  # type: ignore[attr-defined]
            raise
        return report()

    @property
    def skipped_done(self) -> int:
        """Messages of the last ``stream()`` settled by an earlier run (not sent again)."""
        return 0 if self._filter is None else self._filter.settled

    @property
    def skipped_unknown(self) -> int:
        """Messages of the last ``stream()`` of unknown outcome, not sent again."""
        return 0 if self._filter is None else self._filter.unknown

    @property
    def changed(self) -> int:
        """Messages of the last ``stream()`` whose content differs from an earlier run's."""
        return 0 if self._filter is None else self._filter.changed

    @property
    def resumed(self) -> int:
        """Messages of the last ``stream()`` the journal knew from an earlier run."""
        return 0 if self._filter is None else self._filter.resumed

    def changed_warning(self) -> str | None:
        """A warning when most of the last resumed run's messages look changed, else None."""
        return None if self._filter is None else self._filter.finish_note()

    # --- Recorder: called by the engine ---------------------------------------------------

    def dispatched(self, batch: Sequence[Message]) -> None:
        now = time.time()
        rows = [(now, m.id) for m in batch]
        full = self.synchronous == "full"
        if full:
            # The one write that must survive a power loss before money leaves: the mark that the
            # request may have left. Its fsync of the WAL also makes every earlier commit durable
            # (results, reads of the input), which are written without one of their own: lost,
            # they would leave messages "pending" (unknown), never resent unasked.
            self._db.execute("PRAGMA synchronous = FULL")
        try:
            with self._db:
                self._db.execute("BEGIN")
                if self._db.executemany(DISPATCHED, rows).rowcount < len(rows):
                    self._db.executemany(DISPATCHED_NEW, [(tid, t) for t, tid in rows])
        finally:
            if full:
                self._db.execute("PRAGMA synchronous = NORMAL")

    def not_sent(self, batch: Sequence[Message]) -> None:
        # Certainly not delivered (refused, 429, a certain 5xx, a wrong endpoint): resendable after a kill.
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(NOT_SENT_UPDATE, [(now, m.id) for m in batch])

    def completed(self, results: Sequence[Result]) -> None:
        now = time.time()
        accepted = []
        other = []
        for r in results:
            if r.error is None:
                if not r.from_journal:
                    accepted.append((r.message_id, r.attempts, now, r.tracking_id))
            elif not r.from_journal and r.error.code not in _NOT_RECORDED:
                other.append(row_values(r, now))
        if not accepted and not other:
            return
        with self._db:
            self._db.execute("BEGIN")
            # The usual case (accepted, and the row is there) is a plain UPDATE: about half the cost.
            if accepted and self._db.executemany(ACCEPTED_UPDATE, accepted).rowcount < len(accepted):
                other += [row_values(r, now) for r in results if r.error is None and not r.from_journal]
            if other:
                self._db.executemany(COMPLETED_UPSERT, other)

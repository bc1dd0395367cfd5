"""A SQLite journal that makes a bulk job resumable after a crash, and safe to run again.

>>> with Journal("job.db") as journal:                   # one sender at a time: JOURNAL.lock
...     async for result in journal.stream(client, read_jsonl("big.jsonl")):
...         ...                                           # one Result per input, every run
...     print(journal.unknown())    # in flight at a crash, or answer lost: resend knowingly

A journal belongs to one job: it keeps, per tracking id, a fingerprint of the message's wire
content, its state, its attempts and its last error. A row is ``pending`` (committed) just
before each request holding it leaves (after the rate limiter), goes back to ``not_sent``
after an answer that says it certainly was not taken (refused, 429, a certain 5xx, a wrong
endpoint) unless an earlier attempt's outcome (of any run) was unknown, and is settled only by the
provider's answer (``accepted``, ``rejected``) or ends ``failed`` (``unknown`` or not).
Writes are one transaction per chunk of input and per batch (WAL mode).

Reports on what the job knows are ``_journal_queries``; the writes the engine makes through the
``Recorder`` hook are ``_journal_recorder``.

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
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, cast

from ._errors import ErrorCode, JournalError
from ._journal_lock import SenderLock
from ._journal_queries import JournalQueries
from ._journal_recorder import JournalRecorder
from ._journal_schema import open_journal
from ._journal_source import ResumeFilter
from ._models import Result, Route
from ._ratelimit import Priority
from ._report import BulkReport
from ._stream import MessageSource, ResultStream

if TYPE_CHECKING:
    from ._client import CascadeClient

__all__ = ["Journal"]

logger = logging.getLogger("cascade_async")

Synchronous = Literal["full", "normal"]
_BUSY_TIMEOUT_MS: Final = 10_000


class Journal(JournalQueries, JournalRecorder):
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
            # NORMAL between marks; with "full", each ``dispatched`` commit is made with FULL
            # (``_journal_recorder``).
            self._db = open_journal(path, "NORMAL", _BUSY_TIMEOUT_MS)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._filter: ResumeFilter | None = None
        self._running: weakref.ref[ResultStream] | None = None  # the last stream(), while the caller holds it

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
        running = self._running() if self._running is not None else None
        if running is not None and not running.closed:
            # Two streams would each read the rows the other has not settled yet as unsent: every
            # message of both inputs would go out twice.
            raise JournalError(
                f"the journal {self.path} is sending already: one stream() at a time (end or close the first one)"
            )
        options = json.dumps({"resend_unknown": resend_unknown, "allow_changes": allow_changes})
        with self._db:
            self._db.execute("BEGIN")
            self._warn_other_input(input_name)
            cur = self._db.execute(
                "INSERT INTO runs (started_at, input, options) VALUES (?, ?, ?)", (time.time(), input_name, options)
            )
        run = int(cast(int, cur.lastrowid))
        self._filter = f = ResumeFilter(self._db, run, resend_unknown=resend_unknown, allow_changes=allow_changes)
        source = f.input(messages)
        # The filter also yields Results, which admission passes through (not in MessageSource's type).
        stream = client.stream(cast(MessageSource, source), route=route, dedupe=False, recorder=self, priority=priority)
        self._running = weakref.ref(stream)
        return stream

    def _warn_other_input(self, input_name: str | None) -> None:
        """A warning when the journal's last named input was another one: the ids the two share
        are taken for the same messages (settled ones skipped, changed ones refused)."""
        if input_name is None:
            return
        row = self._db.execute("SELECT input FROM runs WHERE input IS NOT NULL ORDER BY run DESC LIMIT 1").fetchone()
        if row is not None and row[0] != input_name:
            logger.warning(
                "the journal %s was last used for the input %r, this run reads %r: ids the two share are taken "
                "for the same messages (settled ones are not sent again; changed ones are refused unless "
                "changes are allowed); use a new journal for a new job",
                self.path,
                row[0],
                input_name,
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
        stream = self.stream(
            client,
            messages,
            route=route,
            resend_unknown=resend_unknown,
            allow_changes=allow_changes,
            input_name=input_name,
            priority=priority,
        )
        # Every input's id in input order as admission names it: Results from the journal, and
        # inputs rejected before they reach the journal (no id, invalid) in their places too.
        stream.keep_order()
        by_id: dict[str, Result] = {}
        duplicates: list[Result] = []

        def report() -> BulkReport:
            ordered = {tid: by_id[tid] for tid in stream.first_occurrences or () if tid in by_id}
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

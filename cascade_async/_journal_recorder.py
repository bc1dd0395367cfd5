"""A journal as the engine's ``Recorder``: the writes made as a batch leaves and as it ends.

``dispatched`` marks rows ``pending`` (committed, with an fsync of the WAL when ``synchronous`` is
``"full"``) just before a request holding them leaves; ``not_sent`` puts them back when an answer
says they certainly were not taken; ``completed`` records the provider's answer or the failure.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Final, Literal

from ._errors import CascadeError, ErrorCode
from ._journal_rows import (
    ACCEPTED_UPDATE,
    COMPLETED_UPSERT,
    DISPATCHED,
    DISPATCHED_NEW,
    NOT_SENT_UPDATE,
    not_sent_error,
    row_values,
)
from ._models import Message, Result, Status
from ._variables import Variable

__all__ = ["JournalRecorder"]

#: Results that say nothing new about the id's row: decided from the journal or by the input alone.
_NOT_RECORDED: Final = frozenset({ErrorCode.DUPLICATE_ID, ErrorCode.CONTENT_CHANGED})


class JournalRecorder:
    """``Journal``'s ``Recorder`` methods, called by the engine."""

    _db: sqlite3.Connection
    synchronous: Literal["full", "normal"]
    #: Set by a templated job with a variable pool (the CLI's ``--template``): keeps the ids a
    #: job's rows took before an upload carries them, so a resumed job finds them.
    variables_hook: Callable[[Sequence[Variable]], None] | None = None

    def variables_uploading(self, variables: Sequence[Variable]) -> None:
        if self.variables_hook is not None:
            self.variables_hook(variables)

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
        self.not_sent_because(batch, None)

    def not_sent_because(self, batch: Sequence[Message], error: CascadeError | None) -> None:
        # Certainly not delivered (refused, 429, a certain 5xx, a wrong endpoint): resendable after a
        # kill. The failure is kept as the messages' last error, for the journal's reports.
        now = time.time()
        why = (None,) * 4 if error is None else not_sent_error(error)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(NOT_SENT_UPDATE, [(now, *why, m.id) for m in batch])

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
                self._earlier_unknown(results)

    def _earlier_unknown(self, results: Sequence[Result]) -> None:
        """A certain failure of a message resent while an earlier run's request may have delivered it
        (``resend_unknown``) is still of unknown outcome: its row says so, and so does its Result."""
        certain = {
            r.tracking_id: r.error
            for r in results
            if r.status is Status.FAILED and r.error is not None and not r.error.outcome_unknown and not r.from_journal
        }
        if not certain:
            return
        marks = ",".join("?" * len(certain))
        query = f"SELECT tracking_id FROM outcomes WHERE unknown = 1 AND tracking_id IN ({marks})"
        for (tid,) in self._db.execute(query, list(certain)):
            certain[tid].outcome_unknown = True

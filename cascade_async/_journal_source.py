"""What a journaled job sends: the input, decided a chunk at a time against the journal.

Each chunk of input costs one indexed ``SELECT ... IN (...)`` and one write transaction, and
no memory per message: the journal itself is the duplicate check (an id read earlier in
this run carries this run's number). Each input item comes out as itself (to be sent) or as
its Result, decided here:

- not in the journal: recorded ``new`` with its fingerprint, and sent;
- read already in this run: REJECTED ``DUPLICATE_ID``;
- settled before (accepted, rejected) with the same content: its recorded Result, ``from_journal``;
- possibly delivered before (accepted, pending, failed of unknown outcome) with other content:
  REJECTED ``CONTENT_CHANGED``, unless ``allow_changes``; its old content may be at the provider;
- rejected before with other content (the user fixed it): sent again;
- of unknown outcome: FAILED ``outcome_unknown`` from the journal, unless ``resend_unknown``;
- never delivered for certain (new, not_sent, a certain failure): sent (with its new content).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any, Final

from ._admission import duplicate, raw_id
from ._errors import CascadeError, ClientClosedError, ErrorCode, ValidationError
from ._journal_input import CHUNK, AsyncInput, Pump, SyncInput
from ._journal_rows import ROW_COLUMNS, Row, as_recorded, fingerprint, recorded_result
from ._journal_schema import ACCEPTED, FAILED, NEW, PENDING, REJECTED
from ._models import Message, Result, Status, convert_chunk, failure
from ._reading import NOT_SENT_AT_CLOSE
from ._template_items import ids_unavailable
from ._templates import Personalised

__all__ = ["ResumeFilter"]

logger = logging.getLogger("cascade_async")

_INSERT: Final = "INSERT INTO outcomes (tracking_id, status, fingerprint, run, updated_at) VALUES (?, 'new', ?, ?, ?)"
#: ``unknown`` stays (or becomes) 1 for a message resent while an earlier run's request may have delivered it.
_TOUCH: Final = (
    "UPDATE outcomes SET run = ?, fingerprint = ?, status = ?, unknown = max(unknown, ?) WHERE tracking_id = ?"
)


_get_id = attrgetter("id")


class ResumeFilter:
    """The input of one run, less what the journal already settles (see the module docstring)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        run: int,
        *,
        resend_unknown: bool,
        allow_changes: bool,
    ) -> None:
        self._db = db
        self.run = run
        self._resend_unknown = resend_unknown
        self._allow_changes = allow_changes
        self._job = hashlib.blake2b(digest_size=16)
        self.messages = 0  # valid input messages read
        self.resumed = 0  # of them, found in the journal from an earlier run
        self.changed = 0  # of those, with other content than before
        self.settled = 0  # given back from the journal as settled
        self.unknown = 0  # given back from the journal as of unknown outcome
        self.finished = False  # the whole input was read
        #: Ids named by inputs of this run that admission refuses (invalid): never in the journal,
        #: so kept here, few as they are, for a later input naming one to be the repeat it is.
        self._refused: set[str] = set()
        #: The rest of the chunk being handed on, and an async input's read-ahead: taken from the
        #: input but not yet given to the engine (``unread``).
        self._current: Iterator[Any] | None = None
        self._pump: Pump | None = None
        self._items: object = None  # an async input (a template's items may have rows unread)

    @property
    def job_fingerprint(self) -> str:
        return self._job.hexdigest()

    def input(self, items: Iterable[Any] | AsyncIterable[Any]) -> SyncInput | AsyncInput:
        """What the stream reads: ``items`` less what the journal settles, with ``unread``."""
        if isinstance(items, AsyncIterable):
            return AsyncInput(self.aiter(items), self.unread)
        return SyncInput(self.sync(items), self.unread)

    def sync(self, items: Iterable[Any]) -> Iterator[Any]:
        it = iter(items)
        while True:
            chunk: list[Any] = []
            try:
                chunk.extend(itertools.islice(it, CHUNK))  # keeps what came before an error of the input
            except Exception:
                self._current = iter(self.decide(chunk))  # read before the input failed: sent first
                yield from self._current
                raise
            if not chunk:
                break
            self._current = iter(self.decide(chunk))
            yield from self._current
        self._finish()

    async def aiter(self, items: AsyncIterable[Any]) -> AsyncIterator[Any]:
        self._items = items
        pump = self._pump = Pump(items)
        try:
            while True:
                try:
                    chunk = await pump.take()
                except Exception as exc:
                    # A template's wait for variable ids failed: the rest of its list fails with it.
                    self._current = iter(self._template_unread(ids_unavailable(exc)))
                    for out in self._current:
                        yield out
                    raise
                if chunk is None:
                    break
                self._current = iter(self.decide(chunk))
                for out in self._current:
                    yield out
        finally:
            pump.close()
        self._finish()

    def unread(self) -> list[Any]:
        """What was taken from the input but not handed on yet: the rest of the chunk decided last,
        and what an async input was read ahead (decided now). The stream settles these at the
        client's close, as it does what it read itself: every input taken gets its result."""
        left = list(self._current) if self._current is not None else []
        self._current = None
        if self._pump is not None and (ahead := self._pump.close()):
            left += self.decide(ahead)
        return left + self._template_unread(ClientClosedError(NOT_SENT_AT_CLOSE))

    def _template_unread(self, error: CascadeError) -> list[Any]:
        """A template's items read a row at a time: a result for each row it took from its input
        and never rendered (one an earlier run settled keeps its recorded result)."""
        unread_results = getattr(self._items, "unread_results", None)
        return [] if unread_results is None else as_recorded(self._db, self.run, unread_results(error))

    def decide(self, chunk: list[Any]) -> list[Any]:
        """Each item as itself (send it) or as its Result; the chunk's writes in one transaction."""
        if not chunk:
            return []
        messages, sendable, all_valid = _as_messages(chunk)
        if all_valid:  # the usual chunk: its ids in C
            named: list[str | None] = list(map(_get_id, messages))
            ids = list(dict.fromkeys(named))
        else:  # an invalid input still names an id, which may repeat one of this run
            named = [m.id if m is not None else raw_id(item) for item, m in zip(chunk, messages, strict=True)]
            ids = list(dict.fromkeys(tid for tid in named if tid is not None))
        placeholders = ",".join("?" * len(ids))
        found = {
            row[0]: Row(*row)
            for row in self._db.execute(
                f"SELECT {ROW_COLUMNS} FROM outcomes WHERE tracking_id IN ({placeholders})", ids
            )
        }
        now = time.time()
        run = self.run
        refused = self._refused
        if not found and all_valid and len(ids) == len(chunk) and (not refused or refused.isdisjoint(ids)):
            # all new: the first run's usual chunk
            prints = list(map(fingerprint, messages))  # type: ignore[arg-type]  # all_valid: no None
            self._job.update(b"".join(prints))
            self.messages += len(ids)
            self._write(list(zip(ids, prints, itertools.repeat(run), itertools.repeat(now))), [])
            return sendable
        inserts: list[tuple[Any, ...]] = []
        touches: list[tuple[Any, ...]] = []
        out: list[Any] = []
        fps: list[bytes] = []
        for item, msg, send, named_id in zip(chunk, messages, sendable, named, strict=True):
            if msg is None:
                # Admission refuses it and says why, unless it repeats an id of this run: then it
                # is that repeat, as in ``client.send_many`` (one result per id in the report).
                row = found.get(named_id) if named_id is not None else None
                if named_id is not None and ((row is not None and row.run == run) or named_id in refused):
                    out.append(duplicate(named_id))
                else:
                    if named_id is not None:
                        refused.add(named_id)
                    out.append(item)
                continue
            tid = msg.id
            fp = fingerprint(msg)
            fps.append(fp)
            self.messages += 1
            if tid in refused:
                out.append(duplicate(tid))
                continue
            row = found.get(tid)
            if row is None:
                inserts.append((tid, fp, run, now))
                found[tid] = Row(tid, NEW, None, None, None, 0, 0, fp, run, None, None, None, None, None)
                out.append(send)
                continue
            if row.run == run:
                out.append(duplicate(tid))
                continue
            self.resumed += 1
            decision, status = self._decide_row(row, fp, msg)
            found[tid] = row._replace(run=run)
            # A message not sent keeps the content that may be at the provider; one sent records its new content.
            sent = decision is msg
            kept = fp if sent or row.fingerprint is None else row.fingerprint
            resent_unknown = sent and (row.status == PENDING or (row.status == FAILED and bool(row.unknown)))
            touches.append((run, kept, status, int(resent_unknown), tid))
            out.append(send if sent else decision)
        self._job.update(b"".join(fps))
        self._write(inserts, touches)
        return out

    def _write(self, inserts: list[tuple[Any, ...]], touches: list[tuple[Any, ...]]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            if inserts:
                self._db.executemany(_INSERT, inserts)
            if touches:
                self._db.executemany(_TOUCH, touches)

    def _decide_row(self, row: Row, fp: bytes, msg: Message) -> tuple[Message | Result, str]:
        """What to do with a message the journal knows, and the row's status from now on."""
        status = row.status
        maybe_delivered = status in (ACCEPTED, PENDING) or (status == FAILED and row.unknown)
        changed = row.fingerprint is not None and row.fingerprint != fp
        if changed or (row.fingerprint is None and status == REJECTED):
            self.changed += changed
            if status == REJECTED:
                return msg, NEW  # fixed by the user: send the new content
            if maybe_delivered and not self._allow_changes:
                return _content_changed(row.tracking_id), status
            if status == ACCEPTED:
                return msg, NEW  # allowed: the new content was never sent
        if status in (ACCEPTED, REJECTED):
            self.settled += 1
            return recorded_result(row), status
        if maybe_delivered and not self._resend_unknown:
            self.unknown += 1
            return recorded_result(row), status
        return msg, status  # never delivered for certain, or a resend of an unknown one, knowingly

    def _finish(self) -> None:
        """The whole input was read: record the run's job fingerprint and size."""
        self.finished = True
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE runs SET finished_at = ?, fingerprint = ?, messages = ?, changed = ? WHERE run = ?",
                (time.time(), self.job_fingerprint, self.messages, self.changed, self.run),
            )
        if (note := self.finish_note()) is not None:
            logger.warning("%s", note)

    def finish_note(self) -> str | None:
        """A warning when most of a resumed job looks changed (computed fields, or another input)."""
        if self.resumed >= 10 and self.changed * 2 > self.resumed:
            return (
                f"{self.changed} of the {self.resumed} messages this journal knew have other content than before: "
                "is this the same input? A computed field (a scheduledSent of 'now + 2 h', say) changes every "
                "run; messages that may have been delivered were not sent again"
                + ("" if self._allow_changes else " (allow_changes / --allow-changes sends the new content)")
            )
        return None


def _as_messages(chunk: list[Any]) -> tuple[list[Message | None], list[Any], bool]:
    """The chunk's items as Messages (None: not a valid message, for admission to refuse), what
    to send for each (a ``Personalised`` item stays one: its variables go up first), and whether
    all are valid."""
    kinds = set(map(type, chunk))
    if kinds == {Message}:
        return chunk, chunk, True
    if kinds == {dict}:
        converted = convert_chunk(chunk)  # the usual case, in C
        if converted is not None:
            return converted, converted, True  # type: ignore[return-value]  # list is invariant
    messages = [_as_message(item) for item in chunk]
    sendable = [item if type(item) is Personalised else m for item, m in zip(chunk, messages, strict=True)]
    return messages, sendable, all(m is not None for m in messages)


def _as_message(item: Any) -> Message | None:
    if type(item) is Message or isinstance(item, Message):
        return item
    if isinstance(item, Personalised):
        item = item.message
    if isinstance(item, Mapping):
        try:
            return Message.from_dict(item)
        except ValidationError:
            return None
    return None


def _content_changed(tid: str) -> Result:
    err = ValidationError(
        "other content than the message an earlier run of this job journaled under this id, which may have "
        "been delivered; not sent (allow_changes=True or --allow-changes sends the new content)",
        field=None,
        tracking_id=tid,
        code=ErrorCode.CONTENT_CHANGED,
    )
    return failure(tid, Status.REJECTED, err, 0)

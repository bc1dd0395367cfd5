"""The inbox: what the sandbox accepted and refused, kept bounded, searchable, and announced live.

Recording is one append per accepted request: the decoded message dicts and their messageIds are
kept as they are, and turned into ``InboxMessage`` values only when someone reads them. Retention is
by count (exact) and by age (per request), so a long benchmark cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec

from ._records import ROUTE_NAMES, InboxMessage, Query, Rejection, Thread, message, when

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_MESSAGES", "Inbox"]

DEFAULT_MAX_MESSAGES: Final = 20_000
DEFAULT_MAX_AGE: Final = 3600.0
MAX_REJECTIONS: Final = 1000
_PREVIEW_BYTES: Final = 2000


class _Batch:
    __slots__ = ("at", "first", "ids", "messages", "route", "start")

    def __init__(self, first: int, at: float, messages: list[dict[str, Any]], ids: list[str], route: str) -> None:
        self.first, self.at, self.messages, self.ids, self.route = first, at, messages, ids, route
        self.start = 0  # messages before it were dropped by the count bound


def _view(seq: int, batch: _Batch, i: int, status_of: Callable[[str], str | None] | None = None) -> InboxMessage:
    view = message(seq, batch.messages[i], batch.ids[i], batch.at, batch.route)
    status = status_of(view.message_id) if status_of is not None else None
    return view if status is None else msgspec.structs.replace(view, status=status)


class Inbox:
    """Bounded storage of accepted messages and rejected requests, on the sandbox's event loop."""

    def __init__(self, *, max_messages: int = DEFAULT_MAX_MESSAGES, max_age: float = DEFAULT_MAX_AGE) -> None:
        if max_messages < 1 or max_age <= 0:
            raise ValueError("inbox retention needs max_messages >= 1 and max_age > 0")
        self.max_messages, self.max_age = max_messages, max_age
        self._batches: collections.deque[_Batch] = collections.deque()
        self._rejections: collections.deque[tuple[float, Rejection]] = collections.deque(maxlen=MAX_REJECTIONS)
        self._size = 0
        self._seq = 0  # the next seq; never reset, so a ``since`` stays meaningful across clears
        self._read: dict[str, int] = {}
        self._listeners: set[asyncio.Event] = set()
        self.generation = 0  # bumped by clear()
        self.closed = False
        #: The sandbox's delivery status of a message id (scheduled, processing, delivered ...).
        self.delivery: Callable[[str], str | None] | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def last_seq(self) -> int:
        return self._seq - 1

    # --- recording (the hot path: keep it to appends) --------------------------------

    def add(self, messages: list[dict[str, Any]], ids: list[str], path: str) -> None:
        now = time.time()
        self._batches.append(_Batch(self._seq, now, messages, ids, path))
        self._seq += len(messages)
        self._size += len(messages)
        if self._size > self.max_messages:
            self._trim()
        if self._batches[0].at < now - self.max_age:
            self._expire(now)
        for event in self._listeners:
            event.set()

    def reject(self, status: int, error: dict[str, str], path: str, body: bytes, batch: Any, index: int | None) -> None:
        if batch is None:  # refused before the body was read as messages (401, 415): still find the phone
            with contextlib.suppress(msgspec.DecodeError):
                batch = msgspec.json.decode(body)
        offending = batch[index] if isinstance(batch, list) and index is not None else None
        phone: str | None = None
        tid: str | None = None
        if isinstance(offending, dict):
            phone = offending.get("toPhone") if isinstance(offending.get("toPhone"), str) else None
            tid = offending.get("id") if isinstance(offending.get("id"), str) else None
            request = msgspec.json.encode(offending)[:_PREVIEW_BYTES].decode(errors="replace")
        else:
            if isinstance(batch, list):
                phones = {m.get("toPhone") for m in batch if isinstance(m, dict)}
                only = phones.pop() if len(phones) == 1 else None
                phone = only if isinstance(only, str) else None
            request = body[:_PREVIEW_BYTES].decode(errors="replace")
        now = time.time()
        rejection = Rejection(
            seq=self._seq,
            received_at=when(now),
            status=status,
            error=error,
            to_phone=phone or None,
            tracking_id=tid,
            index=index,
            message_count=len(batch) if isinstance(batch, list) else None,
            route=ROUTE_NAMES.get(path, path),
            request=request,
        )
        self._seq += 1
        self._rejections.append((now, rejection))
        for event in self._listeners:
            event.set()

    def _trim(self) -> None:
        excess = self._size - self.max_messages
        while excess:
            first = self._batches[0]
            left = len(first.messages) - first.start
            if left <= excess:
                self._batches.popleft()
                excess -= left
                self._size -= left
            else:
                first.start += excess
                self._size -= excess
                excess = 0

    def _expire(self, now: float) -> None:
        cutoff = now - self.max_age
        batches = self._batches
        while batches and batches[0].at < cutoff:
            first = batches.popleft()
            self._size -= len(first.messages) - first.start
        rejections = self._rejections
        while rejections and rejections[0][0] < cutoff:
            rejections.popleft()

    def clear(self) -> None:
        self._batches.clear()
        self._rejections.clear()
        self._read.clear()
        self._size = 0
        self.generation += 1
        for event in self._listeners:
            event.set()

    def close(self) -> None:
        self.closed = True
        for event in self._listeners:
            event.set()

    # --- reading ---------------------------------------------------------------------

    def _newest(self, after_seq: int = -1) -> Iterator[tuple[int, _Batch, int]]:
        """(seq, batch, index) newest first, down to ``after_seq`` (exclusive)."""
        self._expire(time.time())
        for batch in reversed(self._batches):
            for i in range(len(batch.messages) - 1, batch.start - 1, -1):
                seq = batch.first + i
                if seq <= after_seq:
                    return
                yield seq, batch, i

    def messages(self, query: Query, limit: int = 100, before: int | None = None) -> list[InboxMessage]:
        """Matches, newest first; ``before`` (a seq) pages back."""
        found: list[InboxMessage] = []
        for seq, batch, i in self._newest(query.after_seq):
            if before is not None and seq >= before:
                continue
            if batch.at <= query.after_time:
                break
            m, mid = batch.messages[i], batch.ids[i]
            if query.match(m, mid):
                found.append(_view(seq, batch, i, self.delivery))
                if len(found) >= limit:
                    break
        return found

    def find(self, query: Query) -> InboxMessage | None:
        """The newest match."""
        found = self.messages(query, limit=1)
        return found[0] if found else None

    def rejections(self, phone: str | None = None, limit: int = 100, before: int | None = None) -> list[Rejection]:
        out: list[Rejection] = []
        for _, r in reversed(self._rejections):
            if (before is None or r.seq < before) and (phone is None or (r.to_phone or "") == phone):
                out.append(r)
                if len(out) >= limit:
                    break
        return out

    def newer(self, after_seq: int) -> tuple[list[InboxMessage], list[Rejection]]:
        """Everything after ``after_seq``, oldest first (what a live view has not seen yet)."""
        messages = [_view(seq, b, i, self.delivery) for seq, b, i in self._newest(after_seq)]
        messages.reverse()
        rejections = [r for _, r in self._rejections if r.seq > after_seq]
        return messages, rejections

    def count_newer(self, after_seq: int, cap: int) -> int:
        """How many messages came after ``after_seq``, counting no further than ``cap + 1``."""
        return sum(1 for _ in itertools.islice(self._newest(after_seq), cap + 1))

    def threads(self) -> list[Thread]:
        """Recipients, newest activity first, with counts, unread counts and a preview."""
        info: dict[str, list[Any]] = {}
        read = self._read
        for seq, batch, i in self._newest():
            m = batch.messages[i]
            phone = m["toPhone"]
            row = info.get(phone)
            if row is None:
                preview = m.get("renderedText") or m.get("text")
                preview = preview or ("Incoming call" if m["messageType"] == "flashcall" else "")
                row = info[phone] = [0, 0, 0, seq, batch.at, preview[:120]]
            row[0] += 1
            if seq > read.get(phone, -1):
                row[1] += 1
        for at, r in self._rejections:
            phone = r.to_phone or ""
            row = info.get(phone)
            if row is None:
                row = info[phone] = [0, 0, 0, -1, at, ""]
            row[2] += 1
            if r.seq > row[3]:
                row[3], row[4], row[5] = r.seq, at, f"Rejected: {r.status} {r.error.get('code', '')}"
        threads = [
            Thread(phone=p, messages=c, unread=u, rejected=x, last_seq=s, last_at=when(at), preview=pv)
            for p, (c, u, x, s, at, pv) in info.items()
        ]
        threads.sort(key=lambda t: t.last_seq, reverse=True)
        return threads

    def mark_read(self, phone: str, upto: int | None = None) -> None:
        self._read[phone] = self.last_seq if upto is None else upto

    # --- waiting ---------------------------------------------------------------------

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        """An event set whenever something is recorded, cleared or the inbox closes."""
        event = asyncio.Event()
        self._listeners.add(event)
        try:
            yield event
        finally:
            self._listeners.discard(event)

    async def wait(self, query: Query, timeout: float) -> InboxMessage:  # noqa: ASYNC109 (mirrors ?timeout=)
        """The newest match already stored, or the first to arrive; ``TimeoutError`` after ``timeout``."""
        found = self.find(query)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.listen() as event:
            while True:
                cursor = self.last_seq
                try:
                    async with asyncio.timeout_at(deadline):
                        await event.wait()
                except TimeoutError:
                    raise TimeoutError(f"no message matched within {timeout:g} s") from None
                event.clear()
                if self.closed:
                    raise RuntimeError("the sandbox stopped")
                found = self.find(msgspec.structs.replace(query, after_seq=max(query.after_seq, cursor)))
                if found is not None:
                    return found

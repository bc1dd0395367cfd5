"""Filling batches: the one place that decides what a batch is and when it goes out.

A batch goes out when it holds ``size`` items, when the next item would take its encoded
body past ``max_bytes``, ``linger`` seconds after its first item arrived, or when the input
is closed. Bytes are counted as items are added, as the Pub/Sub publisher does: each item
comes with an upper bound of its encoded size (cheap), and only near the limit are the
exact sizes measured (one encode of the items not measured yet). A single item too large
for any batch never gets here: admission rejects it.

The producer waits while a full batch has not been taken yet, which is what bounds the
memory of a job: whoever takes batches (and waits for a free in-flight slot first) sets the
pace.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from ._errors import ClientClosedError

T = TypeVar("T")


class Batch(list[T]):
    """A batch, and its encoded body when admission already made it (one chunk, one encode)."""

    __slots__ = ("body",)

    def __init__(self, items: list[T], body: bytes | None = None) -> None:
        super().__init__(items)
        self.body = body


class Batcher(Generic[T]):
    def __init__(self, size: int, linger: float, max_bytes: int, measure: Callable[[Sequence[T]], int]) -> None:
        self._size = size
        self._linger = linger
        self._max_bytes = max_bytes
        self._measure = measure  # exact encoded length of a list of items
        self._items: list[T] = []
        # The encoded body is "[" plus, per item, its size and a "," or "]": ``_exact`` counts
        # that for items[:_measured], ``_bound`` an upper bound of it for the rest.
        self._exact = 0
        self._bound = 0
        self._measured = 0
        self._full = False
        self._body: bytes | None = None  # the whole batch's encoding, while it is one chunk
        self._first_at = 0.0
        self._closed = False
        self._finished = False
        self._waiting_puts = 0
        self._changed = asyncio.Event()  # wakes the taker: first item, full batch, close
        # Producers waiting on a full batch, first come first served. Only as many are woken as
        # a fresh batch has room for: waking all of them (an Event) costs O(waiters) per batch,
        # which 10,000 single sends with a batch of 1 turn into 10^8 wake-ups.
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def offer(self, item: T, nbytes: int) -> bool:
        """Add without waiting; False when the current batch is full (then ``await put``).

        ``nbytes`` is an upper bound of the item's encoded size.
        """
        items = self._items
        n = len(items)
        if n >= self._size or self._full:
            return False
        if self._finished:
            raise ClientClosedError("no more messages are taken: the batcher is closed")
        if n and 1 + self._exact + self._bound + nbytes + 1 > self._max_bytes:
            # Near the limit: exact sizes for what was only estimated so far, and for the item.
            if self._measured < n:
                self._exact += self._measure(items[self._measured :]) - 1
                self._bound = 0
                self._measured = n
            nbytes = self._measure([item]) - 2
            if 1 + self._exact + nbytes + 1 > self._max_bytes:
                self._full = True
                self._changed.set()
                return False
        items.append(item)
        self._body = None
        self._bound += nbytes + 1
        if n == 0:
            self._first_at = asyncio.get_running_loop().time()
            self._changed.set()
        elif n + 1 == self._size:
            self._changed.set()
        return True

    def extend(self, items: list[T], nbytes: int, body: bytes | None = None) -> bool:
        """Add a whole chunk whose exact encoded length (as a list) is ``nbytes``, if it fits.

        ``body``, the chunk's encoding, is sent as it is when the chunk makes the whole batch.
        """
        n = len(self._items)
        if n + len(items) > self._size or self._full or 1 + self._exact + self._bound + nbytes - 1 > self._max_bytes:
            return False
        if self._finished:
            raise ClientClosedError("no more messages are taken: the batcher is closed")
        if n == self._measured:
            self._measured += len(items)
            self._exact += nbytes - 1
        else:
            self._bound += nbytes - 1
        self._items += items
        self._body = body if n == 0 else None
        if n == 0:
            self._first_at = asyncio.get_running_loop().time()
            self._changed.set()
        elif len(self._items) == self._size:
            self._changed.set()
        return True

    async def put(self, item: T, nbytes: int) -> None:
        self._waiting_puts += 1
        try:
            while not self.offer(item, nbytes):
                await self.wait_room()
        finally:
            self._waiting_puts -= 1

    def room(self) -> int:
        """How many items the current batch still takes by count."""
        return 0 if self._full else self._size - len(self._items)

    async def wait_room(self) -> None:
        """Wait until the taker has taken the full current batch."""
        if len(self._items) >= self._size or self._full:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._wake(1)  # this waiter's turn passes to the next one
                else:
                    self._waiting.remove(turn)
                raise

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                n -= 1

    def close(self) -> None:
        """No more producers: the taker drains what is left (and any waiting put), then gets None."""
        self._closed = True
        self._changed.set()

    async def take(self) -> Batch[T] | None:
        """The next batch, waiting up to ``linger`` for a partial one to fill."""
        loop = asyncio.get_running_loop()
        while True:
            n = len(self._items)
            if n >= self._size or self._full or (n and self._closed):
                return self._pop()
            if self._closed and not self._waiting_puts:
                self._finished = True
                return None
            self._changed.clear()
            if not n:
                await self._changed.wait()
                continue
            remaining = self._first_at + self._linger - loop.time()
            if remaining <= 0:
                return self._pop()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                if self._items:
                    return self._pop()

    def drain(self) -> Batch[T]:
        """Whatever was never taken (for failing it clearly at shutdown); no more is accepted."""
        self._finished = True
        batch = self._pop()
        self._wake(len(self._waiting))  # every producer still waiting learns it is closed, not only a batch's worth
        return batch

    def _pop(self) -> Batch[T]:
        batch = Batch(self._items, self._body)
        self._items = []
        self._body = None
        self._exact = self._bound = self._measured = 0
        self._full = False
        self._wake(self._size)
        return batch

"""Filling batches: the one place that decides when a batch goes out.

A batch goes out when it holds ``size`` items, or ``linger`` seconds after its first item
arrived, or when the input is closed. The producer waits while a full batch has not been
taken yet, which is what bounds the memory of a job: whoever takes batches (and waits for
a free in-flight slot first) sets the pace.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, size: int, linger: float) -> None:
        self._size = size
        self._linger = linger
        self._items: list[T] = []
        self._first_at = 0.0
        self._closed = False
        self._changed = asyncio.Event()  # wakes the taker: first item, full batch, close
        self._taken = asyncio.Event()  # wakes a producer waiting on a full batch

    def offer(self, item: T) -> bool:
        """Add without waiting; False when the current batch is full (then ``await put``)."""
        items = self._items
        n = len(items)
        if n >= self._size:
            return False
        if self._closed:
            raise RuntimeError("batcher is closed")
        items.append(item)
        if n == 0:
            self._first_at = asyncio.get_running_loop().time()
            self._changed.set()
        elif n + 1 == self._size:
            self._changed.set()
        return True

    async def put(self, item: T) -> None:
        while not self.offer(item):
            await self.wait_room()

    def room(self) -> int:
        """How many items the current batch still takes without waiting."""
        return self._size - len(self._items)

    def extend(self, items: list[T]) -> None:
        """Add up to ``room()`` items at once (the bulk fast path)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        before = len(self._items)
        if before + len(items) > self._size:
            raise ValueError("more items than room")
        self._items += items
        if before == 0:
            self._first_at = asyncio.get_running_loop().time()
            self._changed.set()
        elif len(self._items) == self._size:
            self._changed.set()

    async def wait_room(self) -> None:
        """Wait until the taker has taken the full current batch."""
        if len(self._items) >= self._size:
            self._taken.clear()
            await self._taken.wait()

    def close(self) -> None:
        """No more items: the taker drains what is left, then gets None."""
        self._closed = True
        self._changed.set()

    async def take(self) -> list[T] | None:
        """The next batch, waiting up to ``linger`` for a partial one to fill."""
        loop = asyncio.get_running_loop()
        while True:
            n = len(self._items)
            if n >= self._size or (n and self._closed):
                return self._pop()
            if self._closed:
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

    def drain(self) -> list[T]:
        """Whatever was never taken (for failing it clearly at shutdown)."""
        return self._pop()

    def _pop(self) -> list[T]:
        batch = self._items
        self._items = []
        self._taken.set()
        return batch

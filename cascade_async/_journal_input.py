"""A journaled job's input as the stream reads it: an async input read ahead (``Pump``), and the
filter's output with ``unread()``, which hands back what was taken from the input but not passed on
(the stream settles it when the client closes, so every input taken gets its result)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any, Final

__all__ = ["CHUNK", "AsyncInput", "Pump", "SyncInput"]

CHUNK: Final = 1000


class SyncInput:
    """The filter's output: iterated once by the stream, which asks ``unread()`` at a client's close."""

    def __init__(self, items: Iterator[Any], unread: Callable[[], list[Any]]) -> None:
        self._items = items
        self.unread = unread

    def __iter__(self) -> Iterator[Any]:
        return self._items


class AsyncInput:
    """``SyncInput`` for an async input."""

    def __init__(self, items: AsyncIterator[Any], unread: Callable[[], list[Any]]) -> None:
        self._items = items
        self.unread = unread

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items


class Pump:
    """Reads an async source ahead into a chunk: whatever has arrived, up to ``CHUNK`` items.

    A fast source gives full chunks; a slow one (a queue that trickles) has each item decided
    as soon as it arrives, never held back waiting for a chunk to fill.
    """

    def __init__(self, items: AsyncIterable[Any]) -> None:
        self._buffer: list[Any] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False
        self._error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._read(items))

    async def _read(self, items: AsyncIterable[Any]) -> None:
        try:
            async for item in items:
                buffer = self._buffer  # take() swaps it for an empty one
                buffer.append(item)
                if len(buffer) == 1:
                    self._arrived.set()
                elif len(buffer) >= CHUNK:
                    self._room.clear()
                    await self._room.wait()
        except BaseException as exc:  # the source's own failure (or its CancelledError) is the input's
            if self._task.cancelling():
                raise
            self._error = exc
        finally:
            self._ended = True
            self._arrived.set()

    async def take(self) -> list[Any] | None:
        """The items read since the last call (waiting for at least one); None at the end."""
        while not self._buffer and not self._ended:
            self._arrived.clear()
            await self._arrived.wait()
        if not self._buffer:
            if self._error is not None:
                raise self._error
            return None
        chunk, self._buffer = self._buffer, []
        self._room.set()
        return chunk

    def close(self) -> list[Any]:
        """Stop reading ahead; the items read and not taken yet."""
        self._task.cancel()
        ahead, self._buffer = self._buffer, []
        return ahead

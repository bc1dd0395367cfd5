"""The client's lifecycle: ``async with``, ``aclose()`` and the closed state every verb checks."""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType
from typing import Self

from ._coalesce import Coalescer
from ._errors import ClientClosedError
from ._models import Route
from ._ratelimit import RateLimiter
from ._sending import BatchSender
from ._stream import ResultStream
from ._tracking import StatusFetcher
from ._transport import Transport

__all__ = ["ClientLifecycle"]


class ClientLifecycle:
    """Opening and closing a ``CascadeClient``: closing stops every part of it, in order, within one budget."""

    _closed: bool
    _closing: asyncio.Future[None] | None
    _close_timeout: float
    _streams: weakref.WeakSet[ResultStream]
    _coalescers: dict[Route, Coalescer]
    _sender: BatchSender
    _limiter: RateLimiter | None
    _transport: Transport
    _status: StatusFetcher

    async def __aenter__(self) -> Self:
        self._ensure_open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop everything the client runs, then close the connection pool (unless it was passed in).

        Streams read no more input and start no new batch; queued ``send()`` calls are flushed.
        Then nothing more leaves: batches in flight finish within ``close_timeout`` seconds or
        end FAILED with their outcome unknown, each stream ends with ``ClientClosedError``
        after the results already in flight, and sends still pending fail with it. Nothing is
        dropped silently. Safe to call twice.
        """
        if self._closing is None:
            self._closed = True
            self._closing = asyncio.ensure_future(self._close())
        # shield: a second caller (or a cancelled one) must not cut the first one's close short
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout  # one budget for the whole close
        streams = list(self._streams)
        for stream in streams:
            await stream.stop_intake()
        coalescers, self._coalescers = list(self._coalescers.values()), {}
        for coalescer in coalescers:
            await coalescer.aclose(max(0.0, deadline - loop.time()))
        self._sender.closed = True
        if streams:
            left = max(0.0, deadline - loop.time())
            await asyncio.gather(*(s.close_for_client(left) for s in streams))
        if self._limiter is not None:
            await self._limiter.aclose()
        await self._transport.aclose()
        if self._status.limiter is not None:
            await self._status.limiter.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this CascadeClient is closed")

    def _started(self, stream: ResultStream) -> None:
        self._ensure_open()
        self._streams.add(stream)

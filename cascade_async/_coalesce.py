"""Coalescing concurrent ``send()`` calls into shared batches.

Web handlers send one message per request, often hundreds at once. The provider counts
requests, not messages, so concurrent single sends share batches: a batch goes out when it
is full or ``send_linger`` seconds after its first message. Each caller still gets its own
result or its own exception; a caller cancelled before its batch goes out is left out of it.
"""

from __future__ import annotations

import asyncio
import logging

from ._batching import Batcher
from ._engine import BatchSender
from ._errors import AuthenticationError, CascadeError
from ._models import Message, Result, Route, Status

logger = logging.getLogger("cascade_async")

_Waiter = tuple[Message, "asyncio.Future[Result]"]


class Coalescer:
    def __init__(
        self, sender: BatchSender, route: Route, *, batch_size: int, linger: float, max_in_flight: int
    ) -> None:
        self._sender = sender
        self._route = route
        self._batcher: Batcher[_Waiter] = Batcher(batch_size, linger)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batches: set[asyncio.Task[None]] = set()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def send(self, message: Message) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        item = (message, future)
        if not self._batcher.offer(item):
            await self._batcher.put(item)
        return await future

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            batch = await self._batcher.take()
            if batch is None:
                self._slots.release()
                return
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run(self, waiters: list[_Waiter]) -> None:
        try:
            # Callers who gave up before their batch left are not sent.
            live = [w for w in waiters if not w[1].done()]
            if live:
                await self._deliver(live)
        except asyncio.CancelledError:
            for _, future in waiters:
                if not future.done():
                    future.set_exception(
                        CascadeError("the client was closed while this message was being sent", outcome_unknown=True)
                    )
            raise
        finally:
            self._slots.release()

    async def _deliver(self, waiters: list[_Waiter]) -> None:
        try:
            # Two callers may send the same tracking id; each gets its own send.
            results = await self._sender.deliver_repeats([m for m, _ in waiters], self._route)
        except AuthenticationError as exc:
            for _, future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            logger.exception("internal error while sending a coalesced batch")
            for _, future in waiters:
                if not future.done():
                    future.set_exception(CascadeError(f"internal error: {exc!r}", outcome_unknown=True))
            return
        for (_, future), result in zip(waiters, results, strict=True):
            if future.done():
                continue
            if result.status is Status.ACCEPTED:
                future.set_result(result)
            else:
                assert result.error is not None
                future.set_exception(result.error)

    async def aclose(self, deadline: float) -> None:
        """Send what is queued; after ``deadline`` seconds fail whatever is left, clearly."""
        self._batcher.close()
        try:
            async with asyncio.timeout(deadline):
                await self._dispatcher
                while self._batches:
                    await asyncio.gather(*self._batches)
        except TimeoutError:
            logger.error("client closed with sends still pending after %.1fs; failing them", deadline)
        finally:
            self._dispatcher.cancel()
            for task in list(self._batches):
                task.cancel()
            pending = [self._dispatcher, *self._batches]
            await asyncio.gather(*pending, return_exceptions=True)
            for _, future in self._batcher.drain():
                if not future.done():
                    future.set_exception(CascadeError("the client was closed before this message was sent"))

"""Coalescing concurrent ``send()`` calls into shared batches.

Web handlers send one message per request, often hundreds at once. The provider counts
requests, not messages, so concurrent single sends share batches: a batch goes out when it
is full or ``send_linger`` seconds after its first message. Each caller still gets its own
result or its own exception. A caller that gave up (cancelled, or past ``send_timeout``) is
left out of every later attempt, so nothing is sent behind its back.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Sequence

from ._admission import size_bound
from ._batching import Batcher
from ._deliver import repeat_rounds
from ._errors import CascadeError, ClientClosedError, ErrorCode, TimeoutError, ValidationError
from ._models import Message, Result, Route, Status
from ._outcomes import Failed, StopCall
from ._ratelimit import Priority
from ._sending import BatchSender
from ._wire import encode_batch

logger = logging.getLogger("cascade_async")


class _Waiter:
    __slots__ = ("future", "message", "sent")

    def __init__(self, message: Message, future: asyncio.Future[Result]) -> None:
        self.message = message
        self.future = future
        self.sent = False  # a request with it may have left


def _measure(waiters: Sequence[_Waiter]) -> int:
    return len(encode_batch([w.message for w in waiters]))


class _Marks:
    """A recorder that notes, per caller, whether a request with its message may have left."""

    def __init__(self, waiters: list[_Waiter]) -> None:
        self.waiters = waiters

    def _mark(self, batch: Sequence[Message], sent: bool) -> None:
        these = set(map(id, batch))  # the very objects sent: two callers may share an id
        for w in self.waiters:
            if id(w.message) in these:
                w.sent = sent

    def dispatched(self, batch: Sequence[Message]) -> None:
        self._mark(batch, True)

    def not_sent(self, batch: Sequence[Message]) -> None:
        self._mark(batch, False)

    def completed(self, results: Sequence[Result]) -> None:
        pass


class Coalescer:
    def __init__(
        self,
        sender: BatchSender,
        route: Route,
        *,
        batch_size: int,
        linger: float,
        max_in_flight: int,
        max_batch_bytes: int,
        isolate: int,
    ) -> None:
        self._sender = sender
        self._route = route
        self._isolate = isolate
        self._max_message = max_batch_bytes - 2
        self._batcher: Batcher[_Waiter] = Batcher(batch_size, linger, max_batch_bytes, _measure)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batches: set[asyncio.Task[None]] = set()
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def send(self, message: Message, limit: float | None) -> Result:
        size = size_bound(message)
        if size > self._max_message and len(encode_batch([message])) - 2 > self._max_message:
            raise ValidationError(
                f"encodes above max_batch_bytes={self._max_message + 2}",
                field=None,
                tracking_id=message.id,
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        waiter = _Waiter(message, asyncio.get_running_loop().create_future())
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                try:
                    if not self._batcher.offer(waiter, size):
                        await self._batcher.put(waiter, size)
                except ClientClosedError:  # the client closed while this caller waited for room
                    raise ClientClosedError(
                        "the client was closed before this message was sent", tracking_id=message.id
                    ) from None
                return await waiter.future
        except builtins.TimeoutError as exc:
            if not deadline.expired():
                raise  # the send's own failure, a cascade_async.TimeoutError
            waiter.future.cancel()
            raise TimeoutError(
                f"no answer within send_timeout={limit:g}s; it will not be sent later",
                tracking_id=message.id,
                outcome_unknown=waiter.sent,
            ) from exc

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
            live = [w for w in waiters if not w.future.done()]
            # Two callers may send the same tracking id: one request holds an id once.
            for indices in repeat_rounds([w.message for w in live]):
                await self._deliver([live[i] for i in indices])
        except asyncio.CancelledError:
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(
                        ClientClosedError(
                            "the client was closed while this message was being sent",
                            tracking_id=w.message.id,
                            outcome_unknown=w.sent,
                        )
                    )
            raise
        except Exception as exc:  # a bug must not leave callers waiting forever
            logger.exception("internal error while sending a coalesced batch")
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(
                        CascadeError(f"internal error: {exc!r}", tracking_id=w.message.id, outcome_unknown=True)
                    )
        finally:
            self._slots.release()

    async def _deliver(self, waiters: list[_Waiter]) -> None:
        marks = _Marks(waiters)

        def alive(i: int) -> bool:
            return not waiters[i].future.done()

        batch = [w.message for w in waiters]
        try:
            got = await self._sender.send(batch, self._route, marks, alive=alive, priority=Priority.INTERACTIVE)
            if isinstance(got, Failed):
                if self._isolate and len(batch) > 1 and got.splittable:
                    from ._isolate import isolate_bad_messages

                    got = await isolate_bad_messages(
                        self._sender,
                        batch,
                        self._route,
                        marks,
                        got,
                        cap=self._isolate,
                        alive=alive,
                        priority=Priority.INTERACTIVE,
                    )
                else:
                    got = got.results(batch)
        except StopCall as stop:
            err = stop.error
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(err.for_message(w.message.id) if isinstance(err, CascadeError) else err)
            return
        for w, result in zip(waiters, got, strict=True):
            if w.future.done():
                continue
            if result.status is Status.ACCEPTED:
                w.future.set_result(result)
            else:
                assert result.error is not None
                w.future.set_exception(result.error)

    async def aclose(self, deadline: float) -> None:
        """Send what is queued; after ``deadline`` seconds fail whatever is left, clearly."""
        self._batcher.close()
        try:
            async with asyncio.timeout(deadline):
                await self._dispatcher
                while self._batches:
                    await asyncio.gather(*self._batches)
        except builtins.TimeoutError:
            logger.error("client closed with sends still pending after %.1fs; failing them", deadline)
        finally:
            self._dispatcher.cancel()
            for task in list(self._batches):
                task.cancel()
            pending = [self._dispatcher, *self._batches]
            await asyncio.gather(*pending, return_exceptions=True)
            for w in self._batcher.drain():
                if not w.future.done():
                    w.future.set_exception(
                        ClientClosedError(
                            "the client was closed before this message was sent", tracking_id=w.message.id
                        )
                    )

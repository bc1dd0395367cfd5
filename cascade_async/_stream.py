"""One bulk job: pull input lazily, admit it, batch it, send batches concurrently, hand out results.

Three kinds of task cooperate, all owned by the job and cancelled together: the reader
(``_reading.Reader``: pulls input, admits it, fills the batcher), the dispatcher (takes a batch whenever an
in-flight slot is free and starts a batch task), and one task per batch in flight. A slot
is held from dispatch until the consumer has taken the batch's results, so a consumer that
stops reading stops the engine reading input.

Rejected inputs never hold a slot: the reader queues them for the consumer at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any

from ._batching import Batch, Batcher
from ._deliver import deliver
from ._errors import CascadeError, ClientClosedError
from ._events import BatchCompleted, EventHook, emit
from ._models import Message, Result, Route, Status, failure
from ._outcomes import MAY_HAVE_LEFT, Recorder, StopCall
from ._ratelimit import Priority
from ._reading import MessageSource, Reader
from ._sending import BatchSender
from ._wire import encoded_size

__all__ = ["MessageSource", "ResultStream"]

logger = logging.getLogger("cascade_async")


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


#: A queued group of results, and whether it holds an in-flight slot (a batch does; rejections don't).
_Item = tuple[list[Result], bool] | _End


class ResultStream:
    """An async iterator of ``Result``: exactly one per input message, in completion order.

    >>> async with client.stream(messages) as results:
    ...     async for result in results:
    ...         print(result.tracking_id, result.status)

    ``results.batches()`` yields lists instead: one per request, or per group of rejected
    inputs (cheaper when nothing needs a per-message hand-off). A stream is iterated once,
    one way. Leaving the loop early cancels in-flight requests (``async with`` makes that
    happen at a known point). Closing the client ends the stream: results already in flight
    come out, then ``ClientClosedError``.
    """

    def __init__(
        self,
        source: MessageSource,
        *,
        sender: BatchSender,
        route: Route,
        batch_size: int,
        linger: float,
        max_in_flight: int,
        max_batch_bytes: int,
        on_event: EventHook | None,
        dedupe: bool = True,
        recorder: Recorder | None = None,
        isolate: int = 0,
        on_start: Callable[[ResultStream], None] | None = None,
        priority: Priority = Priority.BULK,
    ) -> None:
        self._source = source
        self._sender = sender
        self._route = route
        self._batch_size = batch_size
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._max_batch_bytes = max_batch_bytes
        self._hook = on_event
        self._recorder = recorder
        self._isolate = isolate
        self._on_start = on_start
        self._priority = priority
        self._unique = dedupe  # admission lets no id through twice
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._closing = False  # the client is closing: in-flight batches end, nothing new starts
        self._iterating = False
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batcher: Batcher[Message] = Batcher(batch_size, linger, max_batch_bytes, encoded_size)
        self._reader = Reader(
            source,
            self._batcher,
            sender=sender,
            batch_size=batch_size,
            linger=linger,
            max_batch_bytes=max_batch_bytes,
            dedupe=dedupe,
            backlog_cap=batch_size * max_in_flight,
            # A recorder (the journal) may keep what is uploaded: told before each upload request.
            before_upload=getattr(recorder, "variables_uploading", None),
            on_rejected=lambda group: self._finish(group, holds_slot=False),
        )

    # --- consumer side --------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Result]:
        self._begin()
        return self._each()

    def batches(self) -> AsyncIterator[list[Result]]:
        """The results as lists: one per request, or per group of rejected inputs."""
        self._begin()
        return self._lists()

    @property
    def closed(self) -> bool:
        """Whether the stream has ended: read to its end, closed, or stopped."""
        return self._closed

    @property
    def first_occurrences(self) -> Iterable[str] | None:
        """Tracking ids in input order (first occurrences); None unless ``keep_order()`` was called."""
        return self._reader.admission.order

    def keep_order(self) -> None:
        """Keep every input's tracking id in input order (``first_occurrences``), one list entry
        per input: for a report in input order (``send_many``). Call it before iterating."""
        if self._iterating:
            raise RuntimeError("keep_order() must come before the stream is iterated")
        if self._reader.admission.order is None:
            self._reader.admission.order = []

    async def __aenter__(self) -> ResultStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _begin(self) -> None:
        if self._iterating:
            raise RuntimeError("a ResultStream can be iterated only once")
        if self._closed:
            raise ClientClosedError("this ResultStream is closed")
        if self._on_start is not None:
            self._on_start(self)  # raises ClientClosedError when the client is closed
        self._iterating = True
        self._spawn(self._reader.run())
        self._spawn(self._dispatch())

    async def _next(self) -> list[Result] | None:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # stays the answer to every later call
            if item.error is not None:
                raise item.error
            return None
        results, holds_slot = item
        if holds_slot:
            self._slots.release()
        else:
            self._reader.taken(len(results))
        return results

    async def _each(self) -> AsyncGenerator[Result, None]:
        try:
            while (results := await self._next()) is not None:
                for result in results:
                    yield result
        finally:
            await self.aclose()

    async def _lists(self) -> AsyncGenerator[list[Result], None]:
        try:
            while (results := await self._next()) is not None:
                yield results
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the job: cancel input reads, waits and requests, and wait for them.

        A consumer waiting in another task wakes up with ``ClientClosedError``.
        """
        if self._closed:
            return
        self._closed = True
        await self._cancel(self._tasks)
        self._queue.put_nowait(_End(ClientClosedError("this ResultStream was closed")))

    async def stop_intake(self) -> None:
        """The client is closing (first step): read no more input and start no new batch."""
        if self._closed or not self._iterating:
            self._closed = True
            return
        self._closing = True
        await self._cancel({t for t in self._tasks if t not in self._batch_tasks})

    async def close_for_client(self, grace: float) -> None:
        """The client is closing (second step, once nothing more may be sent): let the batches
        in flight end (up to ``grace`` seconds; then they end FAILED with outcome unknown),
        then end the stream with ``ClientClosedError`` after the results already in flight."""
        if self._closed:
            return
        await self.stop_intake()
        self._reader.settle_unsent()
        if self._batch_tasks:
            await asyncio.wait(self._batch_tasks, timeout=grace)
        self._closed = True
        await self._cancel(self._tasks)
        self._reader.flush_rejected()
        self._queue.put_nowait(_End(ClientClosedError("the client was closed; the stream stopped before its end")))

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        current = asyncio.current_task()
        pending = [t for t in tasks if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- producer side --------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(self) -> None:
        batcher = self._batcher
        slots = self._slots
        while True:
            await slots.acquire()
            batch = await batcher.take()
            if batch is None:
                slots.release()
                break
            task = self._spawn(self._run_batch(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)
        if self._batch_tasks:
            # wait, not gather: cancelling the dispatcher (the client closing) must not cancel them
            await asyncio.wait(set(self._batch_tasks))
        # Every batch's results are queued before the end marker.
        self._queue.put_nowait(_End(self._reader.source_error))

    async def _run_batch(self, batch: Batch[Message]) -> None:
        MAY_HAVE_LEFT.set(False)  # this task's own: whatever the task that made it had sent
        try:
            todo: Sequence[Message] = batch
            refused: list[Result] = []
            uploads = self._reader.uploads
            if uploads is not None:  # templated messages: their variables go first
                todo, refused = await uploads.ensure(batch)
            results = refused
            if todo:
                results = await deliver(
                    self._sender,
                    todo,
                    self._route,
                    self._recorder,
                    isolate=self._isolate,
                    body=batch.body if todo is batch else None,
                    unique=self._unique,
                    priority=self._priority,
                )
                results = refused + results if refused else results
        except StopCall as exc:
            self._abort(exc.error)
            return
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # The client's close timeout ran out with this batch in flight, or still to be sent.
            if MAY_HAVE_LEFT.get():
                closed = ClientClosedError("the client was closed while this batch was in flight", outcome_unknown=True)
            else:  # waiting for the limiter, its variables or a retry after a certain refusal
                closed = ClientClosedError("the client was closed before any of this batch got through")
            results = [failure(m.id, Status.FAILED, closed.for_message(m.id), 0) for m in batch]
        except Exception as exc:
            # A bug must not lose messages: they end FAILED with the reason.
            logger.exception("internal error while sending a batch of %d", len(batch))
            err = CascadeError(f"internal error: {exc!r}", outcome_unknown=True)
            results = [failure(m.id, Status.FAILED, err.for_message(m.id), 0) for m in batch]
        self._finish(results, holds_slot=True)

    def _finish(self, results: list[Result], *, holds_slot: bool) -> None:
        if self._recorder is not None:
            try:
                self._recorder.completed(results)
            except Exception as exc:
                self._abort(exc)
                return
        self._queue.put_nowait((results, holds_slot))
        emit(self._hook, BatchCompleted(route=self._route, results=results))

    def _abort(self, exc: Exception) -> None:
        """Stop sending at once: on 401/403 or a wrong endpoint every later batch would fail
        the same way, and a recorder (the journal) that cannot write would break its promise."""
        logger.error("stopping the job: %s", exc)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._queue.put_nowait(_End(exc))

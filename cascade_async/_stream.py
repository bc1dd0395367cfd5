"""One bulk job: pull input lazily, batch it, send batches concurrently, yield results.

Three kinds of task cooperate, all owned by the job and cancelled together:
the reader (pulls input, checks and de-duplicates it, fills the batcher), the dispatcher
(takes a batch whenever an in-flight slot is free and starts a batch task), and one task
per batch in flight. A slot is held from dispatch until the consumer has taken the batch's
results, so a consumer that stops reading stops the engine reading input.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Final, Protocol

from ._batching import Batcher
from ._engine import BatchSender
from ._errors import AuthenticationError, CascadeError, ValidationError
from ._events import BatchCompleted, EventHook, emit
from ._models import Message, Result, Route, Status, failure

__all__ = ["MessageSource", "ResultStream"]

logger = logging.getLogger("cascade_async")

MessageSource = Iterable[Message | Mapping[str, Any]] | AsyncIterable[Message | Mapping[str, Any]]


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


_Item = list[Result] | _End

DUPLICATE_ID: Final = "DUPLICATE_ID"


class _RecorderFailed(Exception):
    """The recorder could not note a batch about to be sent (``cause`` says why)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Recorder(Protocol):
    """Told of each batch just before its first request leaves and of every result as it
    arrives (the journal)."""

    def dispatched(self, batch: Sequence[Message]) -> None: ...

    def completed(self, results: Sequence[Result]) -> None: ...


class ResultStream:
    """An async iterator of ``Result``: exactly one per input message, in completion order.

    >>> async with client.stream(messages) as results:
    ...     async for result in results:
    ...         print(result.tracking_id, result.status)

    ``async for r in client.stream(...)`` works on its own too; leaving the loop early
    cancels in-flight requests (use ``async with`` to make that happen at a known point).
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
        on_event: EventHook | None,
        dedupe: bool = True,
        recorder: Recorder | None = None,
    ) -> None:
        self._source = source
        self._sender = sender
        self._route = route
        self._batch_size = batch_size
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._hook = on_event
        self._dedupe = dedupe
        self._recorder = recorder
        #: First-occurrence tracking ids in input order (dict: ordered, O(1) membership); empty
        #: when ``dedupe`` is off.
        self.seen: dict[str, None] = {}
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._iterating = False
        self._slots: asyncio.Semaphore | None = None
        self._batcher: Batcher[Message] | None = None
        self._source_error: BaseException | None = None

    # --- consumer side --------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Result]:
        if self._iterating:
            raise RuntimeError("a ResultStream can be iterated only once")
        self._iterating = True
        return self._iterate()

    async def __aenter__(self) -> ResultStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _iterate(self) -> AsyncGenerator[Result, None]:
        self._start()
        assert self._slots is not None
        slots = self._slots
        queue = self._queue
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                slots.release()
                for result in item:
                    yield result
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the job: cancel pending input reads, waits and requests, and wait for them."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- producer side --------------------------------------------------------------

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("this ResultStream is closed")
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._batcher = Batcher(self._batch_size, self._linger)
        self._spawn(self._read())
        self._spawn(self._dispatch())

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read(self) -> None:
        assert self._batcher is not None
        batcher = self._batcher
        take = self._take
        try:
            if isinstance(self._source, AsyncIterable):
                index = 0
                async for item in self._source:
                    index += 1
                    if (wait := take(item, index)) is not None:
                        await wait
            else:
                await self._read_iterable(iter(self._source))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The input itself failed: finish what was read, then raise it to the consumer.
            logger.error("reading input failed after %d message(s): %r", len(self.seen), exc)
            self._source_error = exc
        batcher.close()

    async def _read_iterable(self, items: Iterator[Message | Mapping[str, Any]]) -> None:
        """Pull a synchronous source a batch's worth at a time.

        The fast path, for chunks of unique, new ``Message`` objects, does the per-message
        work in C (a type check, an id collection, dict updates); anything else goes item
        by item through ``_admit``.
        """
        assert self._batcher is not None
        batcher = self._batcher
        seen = self.seen
        index = 0
        while True:
            room = batcher.room()
            if room <= 0:
                await batcher.wait_room()
                continue
            chunk: list[Message | Mapping[str, Any]] = []
            error: BaseException | None = None
            try:
                chunk.extend(itertools.islice(items, room))  # keeps what came before an error
            except Exception as exc:
                error = exc
            if not chunk:
                if error is not None:
                    raise error
                return
            if set(map(type, chunk)) != {Message}:
                fast = False
            elif not self._dedupe:
                fast = True
            else:
                fresh = dict.fromkeys([m.id for m in chunk])  # type: ignore[union-attr]
                fast = len(fresh) == len(chunk) and seen.keys().isdisjoint(fresh)
                if fast:
                    seen.update(fresh)
            if fast:
                batcher.extend(chunk)  # type: ignore[arg-type]
                index += len(chunk)
            else:
                for item in chunk:
                    index += 1
                    if (wait := self._take(item, index)) is not None:
                        await wait
            if error is not None:
                raise error

    def _take(self, item: Message | Mapping[str, Any], index: int) -> Awaitable[None] | None:
        """Admit one item into the batch, or park its rejection; what to await, if anything.

        Returns None when nothing needs waiting for (the common case: no coroutine is made).
        """
        assert self._batcher is not None
        msg = self._admit(item, index)
        if isinstance(msg, Result):
            return self._emit_rejected(msg)
        if not self._batcher.offer(msg):
            return self._batcher.put(msg)
        return None

    def _admit(self, item: Message | Mapping[str, Any], index: int) -> Message | Result:
        """Check one input item: the message to send, or its REJECTED result."""
        seen = self.seen
        if type(item) is Message:
            msg = item
        else:
            try:
                if isinstance(item, Message):
                    msg = item
                elif isinstance(item, Mapping):
                    msg = Message.from_dict(item)
                else:
                    raise ValidationError(
                        f"input #{index} is a {type(item).__name__}, not a Message or a mapping",
                        field=None,
                        tracking_id=None,
                    )
            except ValidationError as exc:
                tid = exc.tracking_id or _raw_id(item) or f"<input #{index}>"
                if tid in seen:
                    return _duplicate(tid)
                if self._dedupe:
                    seen[tid] = None
                return failure(tid, Status.REJECTED, exc, 0)
        if not self._dedupe:
            return msg
        tid = msg.id
        if tid in seen:
            return _duplicate(tid)
        seen[tid] = None
        return msg

    async def _emit_rejected(self, result: Result) -> None:
        assert self._slots is not None
        await self._slots.acquire()
        self._finish([result])

    async def _dispatch(self) -> None:
        assert self._batcher is not None
        assert self._slots is not None
        batcher = self._batcher
        slots = self._slots
        running: set[asyncio.Task[None]] = set()
        while True:
            await slots.acquire()
            batch = await batcher.take()
            if batch is None:
                slots.release()
                break
            task = self._spawn(self._run_batch(batch))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)
        # Every batch's results are queued before the end marker.
        self._queue.put_nowait(_End(self._source_error))

    def _record_send(self, batch: Sequence[Message]) -> None:
        assert self._recorder is not None
        try:
            self._recorder.dispatched(batch)
        except Exception as exc:
            raise _RecorderFailed(exc) from exc

    async def _run_batch(self, batch: list[Message]) -> None:
        on_send = self._record_send if self._recorder is not None else None
        try:
            if self._dedupe:
                results = await self._sender.deliver(batch, self._route, on_send=on_send)
            else:
                results = await self._sender.deliver_repeats(batch, self._route, on_send)
        except AuthenticationError as exc:
            self._abort(exc)
            return
        except _RecorderFailed as exc:
            self._abort(exc.cause)
            return
        except Exception as exc:
            # A bug must not lose messages: they end FAILED with the reason.
            logger.exception("internal error while sending a batch of %d", len(batch))
            err = CascadeError(f"internal error: {exc!r}", outcome_unknown=True)
            results = [failure(m.id, Status.FAILED, err, 0) for m in batch]
        self._finish(results)

    def _finish(self, results: list[Result]) -> None:
        if self._recorder is not None:
            try:
                self._recorder.completed(results)
            except Exception as exc:
                self._abort(exc)
                return
        self._queue.put_nowait(results)
        emit(self._hook, BatchCompleted(route=self._route, results=results))

    def _abort(self, exc: Exception) -> None:
        """Stop sending at once: on 401/403 every later batch would fail the same way, and a
        recorder (the journal) that cannot write would break its promise."""
        logger.error("stopping the job: %s", exc)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._queue.put_nowait(_End(exc))


def _raw_id(item: object) -> str | None:
    if isinstance(item, Mapping):
        tid = item.get("id")
        if isinstance(tid, str) and tid:
            return tid
    return None


def is_duplicate(result: Result) -> bool:
    """Whether ``result`` is the rejection of a tracking id repeated within one call."""
    return isinstance(result.error, ValidationError) and result.error.code == DUPLICATE_ID


def _duplicate(tid: str) -> Result:
    err = ValidationError(
        "repeats a tracking id already used in this call; not sent twice",
        field="id",
        tracking_id=tid,
        code=DUPLICATE_ID,
    )
    return failure(tid, Status.REJECTED, err, 0)

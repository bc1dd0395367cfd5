"""The reader of one bulk job: pulls input lazily, admits it and fills the batcher.

Rejected inputs never wait for an in-flight slot: they are grouped and handed to the job at
once (``on_rejected``), so they cost no request and cannot starve or deadlock the dispatcher.
Their backlog is bounded on its own: the reader waits while the consumer lags by more than
``backlog_cap`` of them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._admission import Admission, size_bound
from ._batching import Batcher
from ._errors import CascadeError, ClientClosedError
from ._inputs import BadLine
from ._models import Message, Result, Status, failure
from ._sending import BatchSender
from ._template_items import ids_unavailable
from ._templates import Personalised, Rejected, TemplateItems
from ._upload_blocks import BlockUploads
from ._uploads import Uploads
from ._variables import Variable

__all__ = ["MessageSource", "Reader"]

logger = logging.getLogger("cascade_async")

NOT_SENT_AT_CLOSE = "the client was closed before this message was sent"

_Input = Message | Mapping[str, Any] | BadLine | Personalised | Rejected
MessageSource = Iterable[_Input] | AsyncIterable[_Input]


class Reader:
    def __init__(
        self,
        source: MessageSource,
        batcher: Batcher[Message],
        *,
        sender: BatchSender,
        batch_size: int,
        linger: float,
        max_batch_bytes: int,
        dedupe: bool,
        backlog_cap: int,
        before_upload: Callable[..., None] | None,
        on_rejected: Callable[[list[Result]], None],
    ) -> None:
        self._source = source
        self._batcher = batcher
        self._sender = sender
        self._batch_size = batch_size
        self._linger = linger
        self._before_upload = before_upload
        self._on_rejected = on_rejected
        self.admission = Admission(dedupe=dedupe, max_bytes=max_batch_bytes, on_variables=self._need_variables)
        self.uploads: Uploads | BlockUploads | None = None  # made at the first templated message
        #: The input's own failure, raised to the consumer after everything read before it.
        self.source_error: BaseException | None = None
        self._rejected: list[Result] = []
        self._leftover: list[Any] = []  # read from the source, not admitted yet
        self._orphans: list[Message] = []  # admitted, not in the batcher yet
        self._backlog = 0  # rejected results handed out but not taken yet
        self._backlog_cap = backlog_cap
        self._drained = asyncio.Event()

    async def run(self) -> None:
        """Read the whole source; then close the batcher (its last batch goes out)."""
        try:
            if isinstance(self._source, TemplateItems):  # whole chunks are admitted in C
                await self._read_template(self._source)
            elif isinstance(self._source, AsyncIterable):
                async for item in self._source:
                    await self._admit(item)
            else:
                await self._read_chunks(iter(self._source))
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the job is stopping
            # The source raised CancelledError of its own accord: that is the input failing.
            self._input_failed(CascadeError("reading the input was cancelled"), exc)
        except Exception as exc:
            self._input_failed(exc, None)
        self.flush_rejected()
        if self.uploads is not None:
            self.uploads.close()
        self._batcher.close()

    async def _read_template(self, source: TemplateItems) -> None:
        try:
            async for chunk, fresh in source.blocks(self._batch_size):
                if fresh:  # the chunk's new variables, before any of its messages is batched
                    self._block_uploads().add(fresh)
                rows = iter(chunk)
                try:
                    await self._read_chunks(rows)
                except asyncio.CancelledError:
                    self._leftover += rows  # rows taken from the source, not admitted: settled at close
                    raise
        except asyncio.CancelledError:
            self._leftover += source.held  # gathered while the rows paused
            self._leftover += source.unrendered_results(ClientClosedError(NOT_SENT_AT_CLOSE))
            raise
        except Exception as exc:
            # The rows failed: those of the chunk it cut short were read, so they go out first,
            # and those waiting for variable ids that could not be had fail with the reason.
            held, fresh = source.take_held()
            if fresh:
                self._block_uploads().add(fresh)
            unrendered = source.unrendered_results(ids_unavailable(exc))
            rest: Iterator[Any] = iter([*held, *unrendered])  # Results pass admission as they are
            try:
                await self._read_chunks(rest)
            except asyncio.CancelledError:
                self._leftover += rest
                raise
            raise

    def taken(self, rejected: int) -> None:
        """The consumer took a group of ``rejected`` results: the reader may go on."""
        self._backlog -= rejected
        self._drained.set()

    def flush_rejected(self) -> None:
        if self._rejected:
            group, self._rejected = self._rejected, []
            self._backlog += len(group)
            self._on_rejected(group)

    def settle_unsent(self) -> None:
        """At the client's close: everything read but never sent gets its result (FAILED: it
        certainly did not leave), so no input is left without one."""
        leftover, self._leftover = self._leftover, []
        unread = getattr(self._source, "unread", None)
        if unread is not None:  # a source that reads ahead (a journal's): what it took and did not hand on
            leftover += unread()
        for item in leftover:
            got = self.admission.admit(item)
            if isinstance(got, Result):
                self._rejected.append(got)
            else:
                self._orphans.append(got[0])
        unsent = self._orphans + list(self._batcher.drain())
        self._orphans = []
        err = ClientClosedError(NOT_SENT_AT_CLOSE)
        self._rejected += [failure(m.id, Status.FAILED, err.for_message(m.id), 0) for m in unsent]
        self.flush_rejected()

    def _need_variables(self, messages: Sequence[Message], variables: Sequence[tuple[Variable, ...]]) -> None:
        self._uploads().register(messages, variables)

    def _uploads(self) -> Uploads:
        if self.uploads is None:
            self.uploads = Uploads(self._sender, linger=self._linger, before_upload=self._before_upload)
        assert isinstance(self.uploads, Uploads)  # a stream's items are a template's blocks or not
        return self.uploads

    def _block_uploads(self) -> BlockUploads:
        if self.uploads is None:
            self.uploads = BlockUploads(self._sender, linger=self._linger, before_upload=self._before_upload)
        assert isinstance(self.uploads, BlockUploads)
        return self.uploads

    def _input_failed(self, error: Exception, cause: BaseException | None) -> None:
        # The input itself failed: finish what was read, then raise it to the consumer.
        if cause is not None:
            error.__cause__ = cause
        logger.error("reading input failed after %d item(s): %r", self.admission.count, error)
        self.source_error = error

    async def _read_chunks(self, items: Iterator[Any]) -> None:
        """Pull a synchronous source a batch's worth at a time; whole chunks are admitted in C."""
        batcher = self._batcher
        admission = self.admission
        while True:
            room = batcher.room()
            if room <= 0:
                self.flush_rejected()
                await batcher.wait_room()
                continue
            chunk: list[Any] = []
            error: Exception | None = None
            try:
                chunk.extend(itertools.islice(items, room))  # keeps what came before an error
            except Exception as exc:
                error = exc
            if not chunk:
                if error is not None:
                    raise error
                return
            admitted = admission.admit_chunk(chunk)
            if admitted is None:
                for i, item in enumerate(chunk):
                    try:
                        await self._admit(item)
                    except asyncio.CancelledError:
                        self._leftover = chunk[i + 1 :]  # read, not admitted: settled at close
                        raise
            elif not batcher.extend(*admitted):
                messages = admitted[0]
                for i, msg in enumerate(messages):
                    try:
                        await self._offer(msg, size_bound(msg))
                    except asyncio.CancelledError:
                        self._orphans += messages[i + 1 :]
                        raise
            if error is not None:
                raise error

    async def _admit(self, item: Any) -> None:
        got = self.admission.admit(item)
        if type(got) is tuple:
            msg, size = got
            if not self._batcher.offer(msg, size):
                await self._offer(msg, size)
        else:
            assert isinstance(got, Result)
            self._rejected.append(got)
            if len(self._rejected) == 1:
                # Out at once, even if the source then waits: grouped with the others of this turn.
                asyncio.get_running_loop().call_soon(self.flush_rejected)
            elif len(self._rejected) >= self._batch_size:
                self.flush_rejected()
            while self._backlog >= self._backlog_cap:
                self._drained.clear()
                await self._drained.wait()

    async def _offer(self, msg: Message, size: int) -> None:
        self.flush_rejected()  # about to wait: let the consumer see them meanwhile
        try:
            await self._batcher.put(msg, size)
        except asyncio.CancelledError:
            self._orphans.append(msg)  # admitted, never batched: settled at close
            raise

"""Uploading a template job's new variables as the template hands them over, a chunk at a time.

The template's pool gives, with each chunk of messages, the values first used in it as
``VariableRun`` lists (ids and values, no ``Variable`` per value). ``BlockUploads.add`` takes them
before the chunk's messages are admitted; each batch task ``await``s ``ensure(batch)`` before its
request, which waits for every value added before it: the batch's own chunk and earlier ones, at no
cost per message. The rules are ``Uploads``' (``_uploads``):

- A block of up to 1000 values is one request (``upload_body``: one encode of the lot), shared by
  every batch that waits for one of its values; a batch waits until 1000 are pending, the input ends,
  or ``linger`` seconds pass, then the pending values go from the oldest on.
- An upload that fails for good settles every message whose text references one of its ids (read
  from its placeholders, only after a failure) without sending it; no other message is held back.
- ``before_upload`` (a journal's hook) runs before each request with its ``Variable`` objects (made
  only when there is a hook).

Positions count the values in the order added. Uploads take the oldest pending values, so every
value in flight was added before every pending one; a cancelled upload puts its values back in front.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

from ._errors import CascadeError
from ._models import Message, Result
from ._outcomes import StopCall
from ._plain_requests import post_body
from ._sending import BatchSender
from ._uploads import ITEMS_PATH, UploadQueue, refusal
from ._variables import PLACEHOLDER, VariableRun, placeholder_id, upload_body

__all__ = ["BlockUploads"]

logger = logging.getLogger("cascade_async")


class BlockUploads(UploadQueue):
    """The variables of one templated stream, handed over in blocks: pending, in flight, failed."""

    def __init__(self, sender: BatchSender, **settings: Any) -> None:  # UploadQueue's settings
        super().__init__(sender, **settings)
        self._pending: collections.deque[tuple[int, VariableRun]] = collections.deque()  # (position, run)
        self._count = 0  # values pending
        self._added = 0  # values added so far: the next one's position
        self._flights: dict[asyncio.Future[None], int] = {}  # upload -> position of its first value

    def add(self, runs: Sequence[VariableRun]) -> None:
        """A chunk's new values, before its messages are admitted: every batch that leaves from
        now on waits for them (and for any earlier ones). Their ids are new to the stream."""
        for run in runs:
            if run.ids:
                self._pending.append((self._added, run))
                self._added += len(run.ids)
                self._count += len(run.ids)
        if self._count >= self._block:
            self._wake()

    async def ensure(self, batch: Sequence[Message]) -> tuple[Sequence[Message], list[Result]]:
        """Wait until every value added so far is uploaded: the messages that may go now, and the
        results of those whose text uses a value that failed to upload."""
        if self._pending or self._flights:
            await self._settle(self._added)
        return self._refuse_failed(batch) if self._failed else (batch, [])

    async def _settle(self, before: int) -> None:
        """Wait until the values at positions below ``before`` are uploaded or failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while True:
            waiting = [flight for flight, start in self._flights.items() if start < before]
            if waiting:
                await asyncio.wait(waiting)
                continue
            if not self._pending or self._pending[0][0] >= before:
                return
            await self._upload_or_wait(self._count, deadline)  # wanted values are pending

    def _take(self) -> tuple[int, list[tuple[int, VariableRun]]]:
        """The oldest pending values, up to one block: their first position, and the runs."""
        pending = self._pending
        first = pending[0][0]
        taken: list[tuple[int, VariableRun]] = []
        room = self._block
        while pending and room:
            start, run = pending.popleft()
            if len(run.ids) > room:
                head, rest = run.split(room)
                pending.appendleft((start + room, rest))
                run = head
            taken.append((start, run))
            room -= len(run.ids)
        self._count -= self._block - room
        return first, taken

    async def _upload_next(self) -> None:
        first, taken = self._take()
        runs = [run for _, run in taken]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flights[done] = first
        try:
            if self._before_upload is not None:
                self._before_upload([var for run in runs for var in run.variables()])
            self.requests += 1
            await post_body(self._sender, ITEMS_PATH, upload_body(runs))
        except asyncio.CancelledError:
            # Not known to be uploaded: whoever needs them uploads them again (still the oldest).
            self._pending.extendleft(reversed(taken))
            self._count += sum(len(run.ids) for run in runs)
            raise
        except CascadeError as exc:
            logger.warning("uploading %d variable(s) failed: %s", sum(map(len, runs)), exc)
            self._fail(runs, exc)
        except Exception as exc:  # a StopCall, or a hook that failed: the job stops
            self._fail(runs, CascadeError(f"not uploaded: {exc}"))
            raise exc if isinstance(exc, StopCall) else StopCall(exc) from exc
        finally:
            del self._flights[done]
            done.set_result(None)

    def _fail(self, runs: list[VariableRun], error: CascadeError) -> None:
        for run in runs:
            self._failed.update(dict.fromkeys(run.ids, error))

    def _refuse_failed(self, batch: Sequence[Message]) -> tuple[Sequence[Message], list[Result]]:
        """The messages whose text references no variable that failed to upload, and the
        refusals of the others (read from their placeholders: only after a failure)."""
        failed = self._failed
        ok: list[Message] = []
        refused: list[Result] = []
        for m in batch:
            err = None
            for text in (m.text, m.fallback.text if m.fallback is not None else None):
                if text and "%" in text:
                    ids = (placeholder_id(p.group(2)) for p in PLACEHOLDER.finditer(text))
                    err = next((failed[vid] for vid in ids if vid in failed), err)
            if err is None:
                ok.append(m)
            else:
                refused.append(refusal(m.id, err))
        return (batch, []) if not refused else (ok, refused)

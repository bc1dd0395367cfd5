"""Uploading message variables (``POST /api/items``) before the messages that use them.

``upload_variables`` is the plain call behind ``client.upload_variables``. ``Uploads`` does it for a
stream of ``Personalised`` messages, each with its own variables (admission ``register``s them); a
template read in chunks hands its new variables over in blocks instead (``BlockUploads``, in
``_upload_blocks``, same rules). Each batch task ``await``s ``ensure(batch)`` before its request, so
no message leaves before its variables are at the provider. The rules:

- An id is uploaded once per stream; a block of up to 1000 new values is one request, shared by
  every batch that needs one of its values (they wait on the same future).
- A batch that needs values not uploaded yet waits until 1000 are pending, the input ends, or
  ``linger`` seconds pass, then uploads the pending values from the oldest on. So the number of
  upload requests stays at one per 1000 distinct values while the input keeps coming and the
  in-flight window (``max_in_flight`` x ``batch_size``) holds 1000 messages (the defaults hold
  4000); a trickle of values, or a smaller window, waits at most ``linger`` per upload.
- An upload that fails for good (after the client's retries) settles every message that references
  one of its ids without sending it: REJECTED with the upload's error when it is permanent (a 4xx),
  FAILED otherwise (certainly not sent, so a resumed job sends it again). No other message is held
  back by it.
- ``before_upload`` (a journal's hook) runs before each request with the variables it carries.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgspec

from ._errors import APIError, CascadeError
from ._models import Message, Result, Status, failure
from ._outcomes import StopCall
from ._plain_requests import post_body
from ._sending import BatchSender
from ._statuses import Verdict, classify
from ._variables import UPLOAD_BATCH, Variable, variable_batches

__all__ = ["ITEMS_PATH", "UploadQueue", "UploadReport", "Uploads", "refusal", "upload_variables"]

logger = logging.getLogger("cascade_async")

ITEMS_PATH: Final = "/api/items"
_var_id = operator.attrgetter("id")


class UploadReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``client.upload_variables`` did: ``uploaded`` variables in ``requests`` requests, and
    the ids of any request that failed for good with its error (``failed``, ``errors``)."""

    uploaded: int
    requests: int
    failed: tuple[int, ...] = ()
    errors: tuple[CascadeError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


async def upload_variables(sender: BatchSender, variables: Iterable[Variable]) -> UploadReport:
    """Upload in bodies of up to 1000, in order, each with the client's limiter and retries.

    A repeated id is sent once (the first value given for it). A request that fails for good is
    reported and the rest still go; wrong credentials or a wrong endpoint raise at once.
    """
    unique: dict[int, Variable] = {}
    for var in variables:
        if not isinstance(var, Variable):
            raise TypeError(f"upload_variables takes Variable objects, not {type(var).__name__}")
        unique.setdefault(var.id, var)
    items = list(unique.values())
    uploaded = requests = 0
    failed: list[int] = []
    errors: list[CascadeError] = []
    for start, body in zip(range(0, len(items), UPLOAD_BATCH), variable_batches(items), strict=True):
        chunk = items[start : start + UPLOAD_BATCH]
        requests += 1
        try:
            await post_body(sender, ITEMS_PATH, body)
        except CascadeError as exc:
            failed.extend(v.id for v in chunk)
            errors.append(exc)
            continue
        uploaded += len(chunk)
    return UploadReport(uploaded=uploaded, requests=requests, failed=tuple(failed), errors=tuple(errors))


class UploadQueue:
    """What ``Uploads`` and ``BlockUploads`` share: their settings, the ids whose upload failed for
    good, and batches waiting for more values to share a request (woken when a block fills or the
    input ends)."""

    def __init__(
        self,
        sender: BatchSender,
        *,
        linger: float,
        block: int = UPLOAD_BATCH,
        before_upload: Callable[[Sequence[Variable]], None] | None = None,
    ) -> None:
        self._sender = sender
        self._linger = linger
        self._block = block
        self._before_upload = before_upload
        self._failed: dict[int, CascadeError] = {}  # id -> the error of its upload
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False  # no more values: the input ended
        self.requests = 0

    def close(self) -> None:
        """The input ended: whatever is pending may go now."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _upload_or_wait(self, pending: int, deadline: float) -> None:
        """Values a batch needs are pending (``pending`` in all): upload the oldest now if a block
        is full, the input ended or ``deadline`` passed; else wait, until then at most, for more
        values to share the request."""
        loop = asyncio.get_running_loop()
        if pending >= self._block or self._closed or loop.time() >= deadline:
            await self._upload_next()
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            if waiter in self._waiters:  # not woken meanwhile
                self._waiters.remove(waiter)

    async def _upload_next(self) -> None:
        """Upload the oldest pending values (up to one block) in this task; others wait on it."""
        raise NotImplementedError


class Uploads(UploadQueue):
    """The variables of one stream: which are pending, in flight, uploaded or failed."""

    def __init__(self, sender: BatchSender, **settings: Any) -> None:  # UploadQueue's settings
        super().__init__(sender, **settings)
        self._needs: dict[int, tuple[Variable, ...]] = {}  # id(message) -> its variables, until its batch
        self._pending: dict[int, Variable] = {}  # registered, in no upload yet (oldest first)
        self._inflight: dict[int, asyncio.Future[None]] = {}
        #: Every id registered: pending, in flight, failed, or else uploaded (one int per distinct value).
        self._seen: set[int] = set()

    def register(self, messages: Sequence[Message], variables: Sequence[tuple[Variable, ...]]) -> None:
        """Admitted messages and, for each, the variables its text references."""
        self._needs.update(zip(map(id, messages), variables, strict=True))
        # In C, a few passes per chunk: the chunk's ids less those seen before (usually all of them
        # in a campaign with a few links), then the new ones' variables.
        flat = list(itertools.chain.from_iterable(variables))
        seen = self._seen
        fresh = set(map(_var_id, flat))
        fresh.difference_update(seen)
        if len(fresh) == len(flat):  # each variable new, and once
            seen.update(fresh)
            self._pending.update(zip(map(_var_id, flat), flat, strict=True))
        elif fresh:
            seen.update(fresh)
            pending = self._pending
            for var in flat:
                if var.id in fresh and var.id not in pending:
                    pending[var.id] = var
        if len(self._pending) >= self._block:
            self._wake()

    async def ensure(self, batch: Sequence[Message]) -> tuple[Sequence[Message], list[Result]]:
        """Wait until every variable of ``batch`` is uploaded: the messages that may go now, and
        the results of those whose variables failed to upload."""
        of_messages = list(map(self._needs.pop, map(id, batch), itertools.repeat(())))
        wanted = set(map(_var_id, itertools.chain.from_iterable(of_messages)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while True:
            pending, inflight = self._pending, self._inflight
            if pending.keys().isdisjoint(wanted) and inflight.keys().isdisjoint(wanted):
                break
            waiting = {inflight[vid] for vid in inflight.keys() & wanted}
            if waiting:
                await asyncio.wait(waiting)
                continue
            await self._upload_or_wait(len(self._pending), deadline)  # every missing id is pending
        failed = self._failed
        if not failed or failed.keys().isdisjoint(wanted):
            return batch, []
        ok: list[Message] = []
        refused: list[Result] = []
        for m, variables in zip(batch, of_messages, strict=True):
            err = next((failed[v.id] for v in variables if v.id in failed), None)
            if err is None:
                ok.append(m)
            else:
                refused.append(refusal(m.id, err))
        return ok, refused

    async def _upload_next(self) -> None:
        ids = list(itertools.islice(self._pending, self._block))
        chunk = list(map(self._pending.pop, ids))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight.update(dict.fromkeys(ids, done))
        try:
            if self._before_upload is not None:
                self._before_upload(chunk)
            self.requests += 1
            await post_body(self._sender, ITEMS_PATH, next(variable_batches(chunk, self._block)))
        except asyncio.CancelledError:
            for var in chunk:  # not known to be uploaded: whoever needs them uploads them again
                self._pending[var.id] = var
            raise
        except CascadeError as exc:
            logger.warning("uploading %d variable(s) failed: %s", len(chunk), exc)
            for var in chunk:
                self._failed[var.id] = exc
        except Exception as exc:  # a StopCall, or a hook that failed: the job stops
            for var in chunk:
                self._failed[var.id] = CascadeError(f"not uploaded: {exc}")
            raise exc if isinstance(exc, StopCall) else StopCall(exc) from exc
        finally:
            collections.deque(map(self._inflight.pop, ids, itertools.repeat(None)), maxlen=0)
            done.set_result(None)


def refusal(tid: str, upload_error: CascadeError) -> Result:
    own = upload_error.for_message(tid)
    own.message = f"its variables could not be uploaded: {upload_error.message}"
    own.args = (str(own),)
    own.outcome_unknown = False  # the message itself was never sent
    permanent = isinstance(upload_error, APIError) and classify(upload_error.status) in (Verdict.SPLIT, Verdict.REJECT)
    return failure(tid, Status.REJECTED if permanent else Status.FAILED, own, 0)

"""The client's single sends: ``send_batch`` (one request, checked up front) and ``send`` (coalesced)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ._client_settings import MAX_BATCH, message_capacity
from ._coalesce import Coalescer
from ._errors import ErrorCode, ValidationError
from ._models import Message, Result, Route
from ._ratelimit import Priority, RateLimit
from ._sending import BatchSender
from ._wire import encode_batch

__all__ = ["SingleSends"]


class SingleSends:
    """One batch as given, or one message at a time through a coalescer per route."""

    _sender: BatchSender
    _route: Route
    _rate_limit: RateLimit | None
    _batch_size: int
    _max_batch_bytes: int
    _max_in_flight: int
    _coalesce: bool
    _coalescers: dict[Route, Coalescer]
    _send_linger: float
    _send_timeout: float | None
    _isolate: int

    if TYPE_CHECKING:

        def _ensure_open(self) -> None: ...  # CascadeClient's (from ClientLifecycle)

    async def send_batch(
        self,
        messages: Iterable[Message],
        *,
        route: Route | None = None,
        priority: Priority | Literal["bulk", "interactive"] = Priority.BULK,
    ) -> list[Result]:
        """POST 1-1000 messages once: no retries, no splitting (a 429 still pauses the rate limiter).

        Results are matched by tracking id, in the order of ``messages``. A message the
        answer does not mention ends FAILED with a ``ProtocolError``. A non-200 answer raises
        the matching ``APIError``; a connection failure raises ``TransportError``.
        """
        self._ensure_open()
        batch = list(messages)
        if not 1 <= len(batch) <= MAX_BATCH:
            raise ValueError(f"send_batch takes 1 to {MAX_BATCH} messages, got {len(batch)}")
        ids: set[str] = set()
        for m in batch:
            if not isinstance(m, Message):
                raise TypeError(f"send_batch takes Message objects, not {type(m).__name__}")
            if m.id in ids:
                raise ValidationError(
                    "appears twice in one batch", field="id", tracking_id=m.id, code=ErrorCode.DUPLICATE_ID
                )
            ids.add(m.id)
        capacity = message_capacity(self._rate_limit)
        if capacity is not None and len(batch) > capacity:
            raise ValidationError(
                f"a batch of {len(batch)} messages can never pass the message bucket: "
                f"RateLimit.message_burst is {capacity}; send at most that many at once",
                field=None,
                tracking_id=None,
            )
        body = encode_batch(batch)
        if len(body) > self._max_batch_bytes:
            raise ValidationError(
                f"the batch encodes to {len(body)} bytes, above max_batch_bytes={self._max_batch_bytes}",
                field=None,
                tracking_id=None,
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
        return await self._sender.post(batch, body, route or self._route, 1, Priority(priority))

    async def send(self, message: Message | Mapping[str, Any], *, route: Route | None = None) -> Result:
        """Send one message with the client's retries; return its ACCEPTED result or raise.

        Concurrent calls share batches (see ``send_linger``; ``coalesce=False`` sends one
        request per message). Raises ``ValidationError`` for invalid input, the ``APIError``
        that rejected it, or the ``TransportError`` / ``ProtocolError`` it failed with.
        """
        self._ensure_open()
        msg = message if isinstance(message, Message) else Message.from_dict(message)
        route = route or self._route
        coalescer = self._coalescers.get(route)
        if coalescer is None:
            coalescer = self._coalescers[route] = Coalescer(
                self._sender,
                route,
                batch_size=self._batch_size if self._coalesce else 1,
                linger=self._send_linger if self._coalesce else 0.0,
                max_in_flight=self._max_in_flight if self._coalesce else MAX_BATCH,
                max_batch_bytes=self._max_batch_bytes,
                isolate=self._isolate,
            )
        return await coalescer.send(msg, self._send_timeout)
